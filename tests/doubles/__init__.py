"""Test doubles: stand-ins for services the code under test talks to over the network."""
