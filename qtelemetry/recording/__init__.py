"""Recorded link data: raw time-tagged detection events and recordings of window counts."""
