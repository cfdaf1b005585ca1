"""The files replay links read: recordings of window counts (``recording``) and raw time-tagged
detection events (``events``).

Below the drivers that read them and above the estimation core: nothing here imports the
runtime, the exporter or a verb (``tests/test_layers.py`` holds the line).
"""
