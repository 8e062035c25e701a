"""Tests of the learning spam classifier (keepmail.spam)."""
