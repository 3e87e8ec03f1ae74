"""`merger methods` and `merger info`: what can be merged, and what a file holds."""

from __future__ import annotations

import argparse
from collections import Counter

from core.architectures.base import natural_key
from core.checkpoints import open_checkpoint
from core.cli.output import human_bytes, human_count, print_json
from core.methods import REGISTRY

_SHOWN = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the merge methods and their parameters")
    p.add_argument("--json", action="store_true", help="print the registry as JSON")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("info", help="show what a checkpoint file or folder holds")
    p.add_argument("path", help="a checkpoint file or folder (safetensors, .pt/.bin, HF folder)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--all", action="store_true", help=f"list every tensor, not the first {_SHOWN}")
    p.set_defaults(func=cmd_info)


def cmd_methods(args: argparse.Namespace) -> int:
    if args.json:
        print_json([spec.to_json() for spec in REGISTRY])
        return 0
    for spec in REGISTRY:
        needs = [
            w
            for w, on in (
                ("base model", spec.needs.base),
                ("data", spec.needs.data),
                ("architecture", spec.needs.arch),
            )
            if on
        ]
        print(f"{spec.name:<20} {spec.label}" + (f"  (needs {', '.join(needs)})" if needs else ""))
        print(f"{'':<20} {spec.description}")
        if spec.aliases:
            print(f"{'':<20} also called: {', '.join(spec.aliases)}")
        for p in spec.params:
            rng = ""
            if p.min is not None or p.max is not None:
                rng = (
                    f" [{p.min if p.min is not None else ''}..{p.max if p.max is not None else ''}]"
                )
            if p.choices:
                rng = f" {{{', '.join(p.choices)}}}"
            scope = " per model" if p.per_model else ""
            print(f"{'':<22}{p.name} ({p.type}{rng}, default {p.default}{scope}): {p.help}")
        print()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with open_checkpoint(args.path) as ckpt:
        # by name, numbers in order (layers.2 before layers.10): safetensors stores by
        # dtype first, which put every int64 BatchNorm counter at the top of the list
        infos = sorted(ckpt.infos(), key=lambda i: natural_key(i.name))
        dtypes = Counter(str(i.dtype).replace("torch.", "") for i in infos)
        data = {
            "path": str(ckpt.path),
            "format": ckpt.format,
            "files": [str(f) for f in ckpt.files],
            "tensors": len(infos),
            "parameters": ckpt.num_parameters,
            "bytes": ckpt.total_bytes,
            "dtypes": dict(dtypes),
            "metadata": dict(ckpt.metadata),
            "config": ckpt.config,
            "notes": ckpt.notes,
            "tied": ckpt.tied_groups(),
            "tensor_list": [
                {
                    "name": i.name,
                    "shape": list(i.shape),
                    "dtype": str(i.dtype).replace("torch.", ""),
                }
                for i in infos
            ],
        }
    if args.json:
        print_json(data)
        return 0
    print(f"{data['path']}")
    print(f"  format      {data['format']} ({len(data['files'])} file(s))")
    print(f"  tensors     {data['tensors']}")
    print(f"  parameters  {human_count(data['parameters'])} ({data['parameters']:,})")
    print(f"  size        {human_bytes(data['bytes'])}")
    print(f"  dtypes      {', '.join(f'{k} x{v}' for k, v in dtypes.items())}")
    for group in data["tied"]:
        shared = ", ".join(f"'{name}'" for name in group)
        print(f"  tied        {shared} share one tensor (counted once)")
    for note in data["notes"]:
        print(f"  note        {note}")
    if "merger_recipe" in data["metadata"]:
        print(
            "  made by     merger "
            + data["metadata"].get("merger_version", "?")
            + " from this recipe:"
        )
        for line in data["metadata"]["merger_recipe"].splitlines():
            print(f"    {line}")
    if "merger_aligned_to" in data["metadata"]:
        meta = data["metadata"]
        print(f"  aligned     {meta['merger_aligned_from']}")
        print(f"    to        {meta['merger_aligned_to']}")
        how = meta.get("merger_alignment", "")
        arch = meta.get("merger_architecture", "?")
        print(f"    by        merger {meta.get('merger_version', '?')}: {arch}, {how}".rstrip(", "))
    rows = data["tensor_list"] if args.all else data["tensor_list"][:_SHOWN]
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        print(f"  {r['name']:<{width}}  {str(r['shape']):<18} {r['dtype']}")
    if len(rows) < len(infos):
        print(f"  ... and {len(infos) - len(rows)} more (use --all)")
    return 0
