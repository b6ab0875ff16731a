"""``radioactive demo``: the whole story on Fashion-MNIST in a few CPU minutes.

The library is imported inside :func:`run`, as in every subcommand: ``radioactive --help`` builds every
parser and should not pay for torch.
"""

from __future__ import annotations

import argparse
import sys

from ..demo_defaults import DEMO_DEFAULTS as D
from ..errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole story on Fashion-MNIST: mark, train a suspect and a clean control, test both",
        description="Load (or train once, a few minutes) the Fashion-MNIST marking network, make a key, mark a "
        "fraction of the training set, train a suspect from scratch on the published data and a clean control "
        "on the original data, run the white-box and black-box tests on both, print the verdicts side by side "
        "and write an HTML report. Rerunning reuses the cached marked images.",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--fraction", type=float, default=D["fraction"],
                        help=f"fraction of training images marked ({D['fraction']:g})")
    parser.add_argument("--train-images", type=int, default=D["train_images"],
                        help=f"training images of both models, drawn from the 55k owner split ({D['train_images']}; 0: all)")
    parser.add_argument("--epochs", type=int, default=D["epochs"], help=f"training epochs of both models ({D['epochs']})")
    parser.add_argument("--mark-steps", type=int, default=D["mark_steps"],
                        help=f"marking optimisation steps per image ({D['mark_steps']})")
    parser.add_argument("--mark-lr", type=float, default=D["mark_lr"], help=f"marking step size ({D['mark_lr']:g})")
    parser.add_argument("--arch", default="cnn", help="suspect architecture: cnn, resnet_narrow, ... (cnn)")
    parser.add_argument("--probes", type=int, default=D["probes"], help=f"black-box probe images ({D['probes']})")
    parser.add_argument("--controls", type=int, default=D["num_controls"],
                        help=f"black-box control carrier sets K ({D['num_controls']})")
    parser.add_argument("--references", type=int, default=D["reference_models"],
                        help=f"clean reference models for difference in differences ({D['reference_models']}; 0: none)")
    parser.add_argument("--reference-fit", choices=["mean", "matched", "matched-class"], default=D["reference_fit"],
                        help="how the references enter the headline test: matched (the suspect's leave-one-out "
                             f"prediction from them) or mean (plain difference in differences) ({D['reference_fit']})")
    parser.add_argument("--null-trials", type=int, default=D["whitebox_null_trials"],
                        help=f"random keys scored by the white-box test as its empirical null ({D['whitebox_null_trials']})")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default=D["precision"],
                        help=f"training arithmetic of the suspect and the control; bfloat16: mixed precision ({D['precision']})")
    parser.add_argument("--mark-precision", choices=["fp32", "bf16"], default=D["mark_precision"],
                        help=f"the marking network's arithmetic while marking images and probes ({D['mark_precision']})")
    parser.add_argument("--marker", default="default",
                        help="marking network checkpoint (default: the cached Fashion-MNIST marker)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import demo_config, format_side_by_side, run_demo
    from ..zoo import resolve_device

    if not 0 < args.fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1] (0.10 for 10 %), got {args.fraction}")
    for flag, value, low in (("--train-images", args.train_images, 0), ("--epochs", args.epochs, 1),
                             ("--mark-steps", args.mark_steps, 1), ("--probes", args.probes, 10),
                             ("--controls", args.controls, 1), ("--references", args.references, 0),
                             ("--null-trials", args.null_trials, 0)):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    config = demo_config(fraction=args.fraction, epochs=args.epochs, arch=args.arch, seed=args.seed,
                         mark_steps=args.mark_steps, mark_lr=args.mark_lr, train_images=args.train_images,
                         probes=args.probes, num_controls=args.controls, reference_models=args.references,
                         whitebox_null_trials=args.null_trials, marker=args.marker, precision=args.precision,
                         mark_precision=args.mark_precision, reference_fit=args.reference_fit,
                         device=str(resolve_device(args.device)))

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run_demo(args.out, config=config, progress=progress)
    print()
    print(format_side_by_side(result))
    print()
    print(f"key:     {result.key_path} (secret; mode 0600)")
    print(f"models:  {result.models['suspect']}, {result.models['control']}")
    print(f"report:  {result.report}")
    print(f"time:    {result.seconds:.0f} s")
    return 0
