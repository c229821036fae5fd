"""Test doubles that speak real protocols: the loopback TWS API simulator lives here."""
