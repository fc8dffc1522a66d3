"""mars_core.benchmark.figures and its command: figures and RUN.md from a results directory."""

from __future__ import annotations

from mars_core.benchmark import cli
from tests.test_benchmark import bench_dir, result  # noqa: F401,F811  (fixtures)

def test_figures_cli_and_run_md(result, bench_dir, tmp_path, capsys):
    assert cli.main(["figures", "--csv", str(bench_dir), "--out", str(tmp_path / "fig")]) == 0
    paths = [tmp_path / "fig" / line for line in
             (p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split())]
    names = {p.name for p in paths}
    assert {"05_scores_by_query.png", "05_paired_sdr.png", "05_hard_vs_random.png", "05_rl_curves.png",
            "05_example_spectrograms.png", "05_bootstrap_sdr.png", "RUN.md"} == names
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    md = (tmp_path / "fig" / "RUN.md").read_text()
    assert f"python -m mars_core.benchmark figures --csv {bench_dir}" in md and "pytest benchmark" in md
    assert "benchmark profile: smoke" in md


def test_training_curves_tolerate_missing_keys():
    import matplotlib

    matplotlib.use("Agg")
    from mars_core.benchmark.figures import plot_training_curves

    axes = plot_training_curves({"a": {"reward_mean": [1.0, 2.0, None], "val_sdr": [1.0], "val_step": [2]},
                                 "supervised": {"loss": [1.0]}})
    assert len(axes) == len(("reward_mean", "approx_kl", "clipfrac", "entropy", "val_sdr"))
    kl_text = [t.get_text() for t in axes[1].texts]
    assert kl_text == ["approx_kl: not logged"]
    x, y = axes[4].lines[0].get_data()
    assert list(x) == [2.0] and list(y) == [1.0]  # val_sdr drawn against val_step


