"""Code the control plane runs on a Ray cluster (not in its own processes). Each module imports only Ray Serve and
what Ray ships with (starlette, aiohttp), never Django or the control plane's apps, so a cluster needs only this
package importable (the control plane's image, or the package on the Ray nodes' Python path)."""
