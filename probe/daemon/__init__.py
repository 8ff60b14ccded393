"""``probe run``: scheduler, result store, metrics, status page and the HTTP endpoint."""
