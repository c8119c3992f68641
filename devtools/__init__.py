"""Developer tooling above the whole system: the local stack runner, CPU limits, the proto stub generator."""
