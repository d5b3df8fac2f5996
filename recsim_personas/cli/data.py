"""The ``recsim-personas data`` subcommands: ``prepare`` a protocol split, ``info`` on one.

The protocol flags of ``data prepare`` (``--dataset``, ``--users``, ``--min-ratings``, ``--max-ratings``,
``--train-ratio``, ``--seed``) are generated from :class:`~recsim_personas.data.protocol_config.ProtocolConfig`,
which alone states their defaults.
"""

from __future__ import annotations

import argparse
import json

from recsim_personas.cli._argtypes import users_arg
from recsim_personas.cli._options import add_config_options
from recsim_personas.cli._output import emit


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from recsim_personas.data.protocol import prepare_split

    config = args.protocol_options.build(args)
    split, created = prepare_split(
        config, args.out, data_dir=args.data_dir, download=not args.no_download, overwrite=args.overwrite
    )
    counts = split.manifest["counts"]
    payload = {
        "out": str(split.path),
        "created": created,
        "split_id": split.split_id,
        "counts": counts,
        "config": config.to_dict(),
    }
    verb = "wrote" if created else "already up to date:"
    text = (
        f"{verb} {split.path} (split {split.split_id[:12]})\n"
        f"  {counts['users']} of {counts['eligible_users']} eligible users, {counts['train']} train /"
        f" {counts['test']} test ratings, {counts['background']} background ratings, {counts['items']} items"
    )
    emit(args, payload, text)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from recsim_personas.data.split import Split

    split = Split.load(args.dir)
    m = split.manifest
    train, test = split.train, split.test
    per_user = split.users["n_ratings"]
    info = {
        "path": str(split.path),
        "split_id": split.split_id,
        "config": m["config"],
        "source": {"dataset": m["source"]["dataset"], "hash": m["source"]["hash"]},
        "counts": m["counts"],
        "ratings_per_user": {
            "min": int(per_user.min()),
            "median": float(per_user.median()),
            "max": int(per_user.max()),
        },
        "train_rating_mean": float(train["rating"].mean()),
        "test_rating_mean": float(test["rating"].mean()),
        "created_at": m.get("created_at"),
        "versions": m.get("versions", {}),
    }
    c = m["counts"]
    text = "\n".join(
        [
            f"split {split.split_id[:12]} at {split.path}",
            f"  dataset      {m['source']['dataset']} (source hash {m['source']['hash'][:12]})",
            f"  protocol     {json.dumps(m['config'])}",
            f"  users        {c['users']} of {c['eligible_users']} eligible; ratings per user"
            f" {info['ratings_per_user']['min']}–{info['ratings_per_user']['max']}"
            f" (median {info['ratings_per_user']['median']:g})",
            f"  ratings      {c['train']} train (mean {info['train_rating_mean']:.3f}), {c['test']} test"
            f" (mean {info['test_rating_mean']:.3f}), {c['background']} background",
            f"  items        {c['items']} ({c['items_in_train']} in train; {c['test_items_unseen_in_train']} test"
            f" ratings are of items the sample never rated in train); summary for {c['items_with_summary']},"
            f" cast for {c['items_with_cast']}",
            f"  created      {m.get('created_at')}",
        ]
    )
    emit(args, info, text)
    return 0


def register_data(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``data prepare`` and ``data info`` (``common`` brings --json, -v, --no-progress)."""
    data = sub.add_parser("data", help="prepare and inspect protocol splits")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = data_sub.add_parser(
        "prepare",
        parents=[common],
        help="select users and split their ratings (the paper's protocol)",
        description="Load MovieLens (from --data-dir, $RECSIM_PERSONAS_DATA_DIR, the cache, or a download),"
        " select users with min..max ratings, sample --users of them and split each user's ratings by time.",
    )
    from recsim_personas.data.protocol_config import ProtocolConfig

    prep.add_argument("--out", required=True, help="directory to write the split into")
    prep.add_argument("--data-dir", default=None, help="directory holding the GroupLens files")
    protocol = prep.add_argument_group("protocol (ProtocolConfig; defaults from the dataclass)")
    protocol_options = add_config_options(
        protocol,
        ProtocolConfig,
        rename={"n_users": "users"},
        types={"n_users": users_arg},
        help={"n_users": "how many eligible users to sample, or 'all' to keep every one"},
    )
    prep.set_defaults(protocol_options=protocol_options)
    prep.add_argument("--overwrite", action="store_true", help="replace a different split already in --out")
    prep.add_argument("--no-download", action="store_true", help="never download; fail if no local copy")
    prep.set_defaults(func=cmd_data_prepare)

    info = data_sub.add_parser("info", parents=[common], help="summarise a split directory")
    info.add_argument("dir", help="split directory")
    info.set_defaults(func=cmd_data_info)
