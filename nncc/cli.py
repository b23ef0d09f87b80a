"""`nncc build model.py`: compile a model file to C, report what the compiler did, and
optionally train it (--train) or check it against the NumPy reference (--check)."""
from __future__ import annotations

import argparse
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np

DESCRIPTION = """\
Compile the training step of a neural network to C.

model.py must define a module-level `graph` (a networkx.DiGraph of nncc ops) or a function
`model()` returning one. It may also define:
  loss        name of the scalar loss node (default "loss")
  outputs     node names predict() returns (default: the loss's non-input predecessors)
  optimizer   e.g. nncc.SGD(lr=0.05)            (default SGD(lr=0.01))
  batch_size  rows per train step                (default 32)
  epochs      epochs for --train                 (default 5)
  data()      a function returning the training feeds, a dict {input name: array};
              needed by --train and --check

The build directory (--out) receives <name>.c, <name>.h, lib<name>.so, report.txt and
train_graph.dot (the forward, derived backward and update graph in Graphviz DOT).
"""

EPILOG = """\
examples:
  nncc build examples/regression.py --train     build, then train on the model's data
  nncc build examples/classifier.py --check     build, then compare with the reference
  nncc build model.py --out build/ --debug-dir dump/   keep every pass's graph and the C

environment:
  CC                 the C compiler (default cc; GCC and clang give the same bits)
  NNCC_CACHE_DIR     the build cache (default $XDG_CACHE_HOME/nncc, else ~/.cache/nncc)
  OMP_NUM_THREADS    threads of the compiled kernels (default: every core)
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="nncc", description="nncc: neural-network training compiled to C.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile a model file to C (see `nncc build --help`)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("model", type=Path, help="the model file (Python) defining `graph` or `model()`")
    b.add_argument("--out", type=Path, default=None, help="build directory (default: build/<model name>)")
    b.add_argument("--train", action="store_true", help="train on the model's data() and print the loss per epoch")
    b.add_argument("--check", action="store_true",
                   help="run --steps train steps compiled and in the NumPy reference; print the largest differences")
    b.add_argument("--steps", type=int, default=5, help="steps for --check (default 5)")
    b.add_argument("--epochs", type=int, default=None, help="epochs for --train (default: model's `epochs`, else 5)")
    b.add_argument("--batch-size", type=int, default=None, help="override the model's batch_size")
    b.add_argument("--seed", type=int, default=0, help="seed of the initial params (default 0)")
    b.add_argument("--no-fusion", action="store_true", help="one kernel per op (for debugging)")
    b.add_argument("--team", choices=("auto", "on", "off"), default="auto",
                   help="run the whole train step on all threads, each on its rows of the batch: auto (where no "
                        "kernel uses the threads on its own and the step is big enough; default), on, off")
    b.add_argument("--debug-dir", type=Path, default=None, help="dump the graph after every pass, and the C")
    return parser.parse_args(argv)


def load_model_file(path: Path) -> dict:
    if not path.exists():
        raise SystemExit(f"nncc: no such model file: {path}")
    namespace = runpy.run_path(str(path), run_name="nncc_model")
    if "graph" in namespace:
        graph = namespace["graph"]
    elif callable(namespace.get("model")):
        graph = namespace["model"]()
    else:
        raise SystemExit(f"nncc: {path} defines neither `graph` nor `model()`")
    return {**namespace, "graph": graph}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import nncc
    from nncc.compiler.dot import to_dot
    from nncc.testing import RTOL, largest_differences, run_both

    model = load_model_file(args.model)
    name = args.model.stem
    out = args.out or Path("build") / name
    out.mkdir(parents=True, exist_ok=True)
    try:
        trainer = nncc.compile(model["graph"], loss=model.get("loss", "loss"), outputs=model.get("outputs"),
                               optimizer=model.get("optimizer"), batch_size=args.batch_size or model.get("batch_size", 32),
                               seed=args.seed, fusion=not args.no_fusion, name=name, debug_dir=args.debug_dir,
                               team={"auto": None, "on": True, "off": False}[args.team])
    except nncc.NNCCError as exc:
        raise SystemExit(f"nncc: {args.model}: {exc}") from None
    (out / f"{name}.c").write_text(trainer.source)
    (out / f"{name}.h").write_text(trainer.header)
    shutil.copyfile(trainer.report.library, out / f"lib{name}.so")
    (out / "train_graph.dot").write_text(to_dot(trainer.program.train.graph, f"{name} train graph"))
    (out / "report.txt").write_text(str(trainer.report) + "\n")
    print(trainer.report)
    print(f"  wrote            {out}/{{{name}.c, {name}.h, lib{name}.so, report.txt, train_graph.dot}}")

    status = 0
    if args.check or args.train:
        if not callable(model.get("data")):
            raise SystemExit(f"nncc: --train/--check need {args.model} to define data()")
        data = {k: np.asarray(v) for k, v in model["data"]().items()}
    if args.check:
        first = {k: v[:trainer.batch_size] for k, v in data.items()}
        diffs = largest_differences(run_both(trainer, first, steps=args.steps))
        print(f"\ncheck: {args.steps} steps compiled (float32) vs NumPy reference (float64)")
        print(f"  {'value':<34}{'max abs diff':>14}{'max rel diff':>14}")
        for what, (absolute, relative) in diffs.items():
            print(f"  {what:<34}{absolute:>14.3e}{relative:>14.3e}")
        worst = max(min(a / 1e-5, r / RTOL) for a, r in diffs.values())
        status = 0 if worst <= 1 else 1
        print("  OK: within float32 tolerance" if status == 0 else "  FAILED: differences beyond float32 tolerance")
    if args.train:
        train(trainer, data, args.epochs or model.get("epochs", 5))
    return status


def train(trainer, data, epochs):
    """Whole epochs in C (`Trainer.fit`), reshuffled each epoch, the loss per epoch."""
    rows = len(next(iter(data.values())))
    print(f"\ntrain: {epochs} epochs of {rows} rows, batches of {trainer.batch_size} (fit, one C call per epoch)")
    trainer.fit(epochs=epochs, batch_size=trainer.batch_size, shuffle=True, verbose=True, **data)


if __name__ == "__main__":
    sys.exit(main())
