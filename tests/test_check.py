"""The pipeline's check mode (compiler/check.py): every pass validated, numbers kept."""
import sys
from pathlib import Path

import pytest

import nncc
from nncc.compiler.passes import Pipeline, build_train_graph

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import classifier  # noqa: E402
import norm_dropout  # noqa: E402
import regression  # noqa: E402

MODELS = {
    "norm_dropout": lambda: (norm_dropout.model(features=12, hidden=10, classes=4, p=0.2), ["logits"]),
    "classifier": lambda: (classifier.model(), None),
    "regression": lambda: (regression.model(hidden=8), None),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_pass_keeps_the_numbers_of_the_example_models(name):
    graph, outputs = MODELS[name]()
    pipeline = Pipeline(check=True, keep_stages=True)
    train = build_train_graph(graph, "loss", outputs, nncc.SGD(lr=0.1, momentum=0.9), pipeline)
    checked = [stage for stage, _ in pipeline.stages]
    assert checked == ["load", "infer shapes", "validate", "autodiff", "state updates", "optimizer update",
                       "expand", "cse", "dce"]
    assert train.grads and any("writes" in n.attrs for n in train)  # what the checks compared


def _relu_to_tanh(graph):
    return graph.with_nodes(n.replace(op="tanh") if n.op == "relu" else n for n in graph)


def _drop_first_relu(graph):
    first = next(n.name for n in graph if n.op == "relu")
    return graph.with_nodes(n for n in graph if n.name != first)


@pytest.mark.parametrize("sabotage, message", [(_relu_to_tanh, r"pass 'sabotage' changed"),
                                               (_drop_first_relu, r"pass 'sabotage' left an invalid graph")])
def test_a_pass_that_changes_the_numbers_or_breaks_the_graph_is_caught(sabotage, message):
    graph, _ = MODELS["classifier"]()
    train = build_train_graph(graph, "loss", None, nncc.SGD(lr=0.1))
    with pytest.raises(AssertionError, match=message):
        Pipeline(check=True).run("sabotage", sabotage, train)


def test_compile_takes_check_passes():
    graph, outputs = MODELS["norm_dropout"]()
    trainer = nncc.compile(graph, outputs=outputs, batch_size=8, check_passes=True)
    assert trainer.step(**norm_dropout.data(rows=8, features=12, classes=4)) > 0
