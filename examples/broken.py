"""An application whose import fails on Ray: used to show DEPLOY_FAILED handling."""

raise ImportError("examples.broken cannot be imported on purpose")
