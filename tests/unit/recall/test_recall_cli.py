"""``mindstream recall`` argument handling: options override settings, before or after ACTION."""

from __future__ import annotations

import pytest

from mindstream.app.cli import build_parser
from mindstream.settings import Settings
from recall.cli import _apply


@pytest.mark.parametrize(
    "argv, handler, port, index, bundle",
    [
        (["recall"], "_serve", 8080, "auto", "bundles/current"),
        (["recall", "--port", "9", "serve"], "_serve", 9, "auto", "bundles/current"),
        (
            ["recall", "serve", "--port", "9", "--index", "ivf"],
            "_serve",
            9,
            "ivf",
            "bundles/current",
        ),
        (["recall", "index", "--bundle", "b", "--check"], "_index", 8080, "auto", "b"),
        (
            ["recall", "precompute", "--n", "5", "--full"],
            "_precompute",
            8080,
            "auto",
            "bundles/current",
        ),
        (["recall", "openapi"], "_openapi", 8080, "auto", "bundles/current"),
    ],
)
def test_options_override_settings(argv, handler, port, index, bundle):
    args = build_parser().parse_args(argv)
    settings = _apply(args, Settings())
    assert args.handler.__name__ == handler
    assert (settings.recall_port, settings.recall_index, settings.bundle_path) == (
        port,
        index,
        bundle,
    )


def test_bad_values_are_refused(capsys):
    parser = build_parser()
    for argv in (["recall", "--index", "lsh"], ["recall", "precompute", "--n", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "expected an integer >= 1" in capsys.readouterr().err


def test_openapi_command_prints_the_document(capsys):
    from mindstream.app.cli import main
    from recall.service import OPENAPI_PATH

    assert main(["recall", "openapi"]) == 0
    assert capsys.readouterr().out == OPENAPI_PATH.read_text()
