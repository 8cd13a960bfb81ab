"""Failure drills: tools that inject real faults (real processes, real sockets) for tests."""
