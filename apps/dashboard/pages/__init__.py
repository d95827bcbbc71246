"""The dashboard's pages, one module per subject; apps.dashboard.urls routes them."""
