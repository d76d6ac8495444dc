"""SOAP as a library (search.parallelize): a strategy searched for a flax nnx model, as a plan for its own step.

    import soap
    plan = soap.parallelize(model, images, num_devices=8, machine="h100x8", budget_s=20)
    plan = soap.load_plan(model, "strategy.json", images)

The package's own modules sit below the simulator and the search (ARCHITECTURE.md's layering: soap never
imports them); these entry points compose all three, so the package hands them over from
search.parallelize when first asked for, and importing any soap module imports nothing above it.
"""

__all__ = ["parallelize", "load_plan", "Plan"]


def __getattr__(name: str):
    if name in __all__:
        from search import parallelize as library

        return getattr(library, name)
    raise AttributeError(f"module 'soap' has no attribute {name!r}")
