"""What the tests share: helpers that several test modules use, and nothing that is a test.

A test module imports from here (and gets fixtures from a conftest.py), never from another test
module; tests/test_layering.py checks that.
"""
