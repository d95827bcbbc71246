"""Sample Ray Serve applications run by the local demo cluster and the tests."""
