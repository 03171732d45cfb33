"""Small HTTP servers on 127.0.0.1 that stand in for Compute Engine, GitHub and the GCE
metadata server, for tests and benchmarks. They answer in the published shapes (the fixtures
in tests/fixtures/, cut from the published API descriptions) and reject request bodies those
descriptions reject."""
