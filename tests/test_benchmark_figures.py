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




def test_training_curves_group_seeds_and_share_one_legend():
    """Seeds of one system share its colour and differ in line style; one legend, in the spare grid cell."""
    import matplotlib

    matplotlib.use("Agg")
    from mars_core.benchmark.figures import _seed_family, plot_training_curves

    assert _seed_family("MARS-Sep plus, seed 2") == ("MARS-Sep plus", 2)
    assert _seed_family("entropy only") == ("entropy only", 0)
    assert _seed_family("a, seed x") == ("a, seed x", 0)  # not a seed suffix
    h = {"reward_mean": [0.1, 0.2, 0.3], "val_sdr": [1.0, 2.0], "val_step": [0, 2]}
    axes = plot_training_curves({"A": h, "A, seed 1": h, "B": h}, keys=("reward_mean", "val_sdr"))
    lines = {ln.get_label(): ln for ln in axes[0].lines}  # 3 points: no smoothing, one line per system
    assert set(lines) == {"A", "A, seed 1", "B"}
    assert lines["A"].get_color() == lines["A, seed 1"].get_color() != lines["B"].get_color()
    assert (lines["A"].get_linestyle(), lines["A, seed 1"].get_linestyle(), lines["B"].get_linestyle()) == (
        "-", "--", "-")
    fig = axes[0].figure
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1 and legends[0].axes not in list(axes)  # the spare cell, not a data axis
    assert [t.get_text() for t in legends[0].get_texts()] == ["A", "A, seed 1", "B"]
