"""Simulated QKD devices that speak the standards real ones do.

Per site, an ETSI GS QKD 014 KME (``kme``) and an ETSI GS QKD 015 RESTCONF node (``restconf``)
serve the simulated links of that site, read through the small ``SimulatedLink`` interface
(``links``), so that the exporter's real drivers can watch a simulation the way they watch a
production deployment, and application demand really consumes simulated key.
"""
