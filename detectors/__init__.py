"""driftline detection core: pure, in-process detectors turning events into control messages."""
