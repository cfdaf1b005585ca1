"""Typed models and parsers of the documents real QKD devices serve (ETSI GS QKD 014 and 015).

Parsers return typed values or raise ``DriverError`` with a bounded reason (``invalid_json``,
``missing_field``, ``wrong_type``, ``invalid_value``, ...) and a message that names the field but
never repeats the device's value, so no key material or key ID can reach a log.
"""
