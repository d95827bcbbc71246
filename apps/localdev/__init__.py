"""The local developer harness: a local Ray cluster (``local_ray``) and the commands that start the whole product
on one machine (``run_local``), seed demo data (``seed_demo``, ``seed_models``) and send it traffic (``traffic``).
Nothing in the product imports it; the tests' and benchmarks' Ray clusters come from it too."""
