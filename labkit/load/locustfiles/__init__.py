"""Locustfiles run by labkit.load.run_locust in a subprocess — never import them in a kernel."""
