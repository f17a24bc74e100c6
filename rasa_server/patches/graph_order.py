"""The model's graph run in its dependency order, without dask.

Replaces `DaskGraphRunner.run`.
Why: each message runs the model's graph (NLU, then a prediction per action) through dask's
synchronous scheduler, which re-derives the minimal graph, rebuilds the task dict and schedules
it on every call, for a graph of a dozen nodes run in one thread anyway. The same nodes run in
the same dependency order directly, the order worked out once per set of targets (kept on the
runner). Each node gets exactly what dask gave it: its parents' (name, output) pairs, an
input's (name, value), the bare name of what nothing provides; errors are Rasa's
`GraphRunError`s.
Rasa internals touched: `DaskGraphRunner.run`, `DaskGraphRunner._graph_schema` and
`_instantiated_nodes` (private), `GraphSchema.minimal_graph_schema`, `SchemaNode.needs`.
"""

from __future__ import annotations

from typing import Any, Optional

from rasa_server.patches import patch


def install() -> None:
    from rasa.engine.exceptions import GraphRunError
    from rasa.engine.runner.dask import DaskGraphRunner

    def plan(runner: DaskGraphRunner, targets: tuple[str, ...]) -> list[tuple[str, Any, tuple[str, ...]]]:
        plans = runner.__dict__.setdefault("_plans", {})
        if targets not in plans:
            schema = runner._graph_schema.minimal_graph_schema(list(targets))
            order: list[str] = []

            def visit(name: str, path: tuple[str, ...] = ()) -> None:
                if name in order or name not in schema.nodes:
                    return
                if name in path:
                    raise GraphRunError(f"The graph has a cycle through '{name}'.")
                for parent in schema.nodes[name].needs.values():
                    visit(parent, path + (name,))
                order.append(name)

            for target in targets:
                visit(target)
            plans[targets] = [(name, runner._instantiated_nodes[name], tuple(schema.nodes[name].needs.values()))
                              for name in order]
        return plans[targets]

    def run(self: DaskGraphRunner, inputs: Optional[dict[str, Any]] = None,
            targets: Optional[list[str]] = None) -> dict[str, Any]:
        run_targets = tuple(targets if targets else self._graph_schema.target_names)
        steps = plan(self, run_targets)
        results: dict[str, Any] = {}
        for name, value in (inputs or {}).items():
            if isinstance(value, str) and (value in self._graph_schema.nodes):
                raise GraphRunError(
                    f"Input value '{value}' clashes with a node name. Make sure that none of the input "
                    f"names passed to the `run` method are the same as node names in the graph schema.")
            results[name] = (name, value)
        try:
            for name, node, needs in steps:
                results[name] = node(*(results.get(parent, parent) for parent in needs))
            return dict(results[target] for target in run_targets)
        except RuntimeError as e:
            raise GraphRunError("Error running runner.") from e

    patch(DaskGraphRunner, "run", run)
