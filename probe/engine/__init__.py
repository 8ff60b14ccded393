"""One cycle of one target: the plan built once per config load, the gathering of the stages."""
