"""Data commands: ``asd synth`` (built-in synthetic machine sounds) and ``asd featurize``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from asdcli.cli import render
from asdcli.cli.common import err, flag_of, help_default, out, resolve_settings
from asdcli.errors import UserError


def synth(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to write the dataset to.")],
    machines: Annotated[
        str, typer.Option(help="Comma-separated machine types.")
    ] = "bearing,fan,gearbox,valve,slider",
    n_train: Annotated[
        int, typer.Option("--train", help="Training clips per machine (source + target).")
    ] = 100,
    target_train: Annotated[
        int | None,
        typer.Option(help="Target-domain training clips per machine (default: 1 %, at least 1)."),
    ] = None,
    n_test: Annotated[
        int, typer.Option("--test", help="Test clips per machine, balanced 4 ways.")
    ] = 40,
    seconds: Annotated[float, typer.Option(help="Clip length in seconds.")] = 10.0,
    sample_rate: Annotated[int, typer.Option(help="Sample rate in Hz.")] = 16000,
    difficulty: Annotated[
        float, typer.Option(help="0 = obvious anomalies ... 1 = subtle ones.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
) -> None:
    """Generate synthetic machine sounds in the DCASE 2023 layout and naming.

    Writes OUT/<machine>/train/section_00_source_train_normal_0000_<attr>_<val>.wav,
    OUT/<machine>/test/... (normal/anomaly x source/target) and attributes_00.csv per machine.
    """
    from asdcli.synth import SynthArgumentError, synthesize

    names = [m.strip() for m in machines.split(",") if m.strip()]
    bar, progress = render.count_bar("synth", err)
    with bar:
        try:
            summary = synthesize(
                out_dir,
                machines=names,
                n_train=n_train,
                n_test=n_test,
                seconds=seconds,
                sample_rate=sample_rate,
                difficulty=difficulty,
                seed=seed,
                target_train=target_train,
                progress=progress,
            )
        except SynthArgumentError as exc:
            # The library names its argument; the CLI user knows it by this command's flag.
            raise UserError(f"{flag_of(ctx, exc.argument)} {exc.detail}") from None
    out.print(render.synth_table(summary, out_dir))
    out.print(f"Wrote in {summary.seconds:.1f} s. Next: asd featurize {out_dir}")


def featurize(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Machine folders (with train/ and test/), folders of them, or WAV files.",
        ),
    ],
    store: Annotated[
        Path | None, typer.Option(help=help_default("Feature store file.", "paths.store"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help=help_default("Worker processes; 0 = one per CPU core.", "featurize.workers")
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute cached clips.")] = False,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--no-strict",
            help=help_default("Stop at the first unreadable file.", "featurize.strict"),
        ),
    ] = None,
) -> None:
    """Compute log-mel features of every WAV file and cache them in an HDF5 store.

    Clips already in the store with the same feature settings (and unchanged files) are not
    recomputed. Unreadable files are skipped with a warning (--strict makes them an error).
    """
    from asdcli.featurize import featurize as run_featurize

    settings = resolve_settings(
        ctx,
        {"paths.store": "store", "featurize.workers": "workers", "featurize.strict": "strict"},
    )
    bar, progress = render.count_bar("featurize", err, rate=True)
    with bar:
        summary = run_featurize(
            paths,
            settings.features,
            settings.paths.store,
            workers=settings.featurize.workers,
            force=force,
            strict=settings.featurize.strict,
            batch_clips=settings.featurize.batch_clips,
            progress=progress,
        )
    render.print_featurize(summary, settings.paths.store, out, err)
    if summary.interrupted:
        raise typer.Exit(130)
