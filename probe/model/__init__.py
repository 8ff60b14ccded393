"""The data every layer shares: reason codes, results, the deadline; imports nothing above it."""
