"""The shared vocabulary every wing may import and that imports no wing (rank 0).

Measurement types and units, personal identity numbers, Observation ids and dedup
digests, the readings row, device bindings, principals and scopes, severities.
"""
