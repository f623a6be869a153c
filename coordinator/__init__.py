"""The mu coordinator: launches workers and drives each through a state machine over mutual TLS."""
