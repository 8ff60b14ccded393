"""The probe stages (DNS, TLS, HTTP, OCSP) and their socket layers: network I/O, results, no verdicts."""
