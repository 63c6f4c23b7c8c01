"""The routing engine: neutral envelopes, the bus and the pipeline from message to ticket."""
