"""Owner-side and engineering benchmarks: marking quality and speed, large trees, calibration on clean models,
white-box speed and its positive control, fuzzing, kill and resume (``benchmarks/results/*.json``)."""

from __future__ import annotations

from .common import f, load


def marking() -> list[str]:
    out = []
    quality = load("bench_mark_quality.json")
    if quality:
        car, unused = quality["carrier"], quality["unused_random_directions"]
        out += [
            "**Marking quality** (1,000 Fashion-MNIST training images, default settings, built-in marker; "
            "`benchmarks/bench_mark.py quality`):",
            "",
            "| images | PSNR min / mean (dB) | shift along own carrier > 0 | mean cosine with own carrier | "
            "mean cosine with unused random directions |",
            "|---|---|---|---|---|",
            f"| {quality['images']} | {f(quality['psnr_min'])} / {f(quality['psnr_mean'])} | "
            f"{100 * car['fraction_positive_single_draw']:.1f} % | {f(car['cosine_mean'], 3)} | "
            f"{f(unused['cosine_mean'], 4)} ± {f(unused['cosine_mean_standard_error'], 4)} (s.e.) |",
            "",
        ]
    speed = load("bench_mark_speed.json")
    if speed:
        out += [
            "**Marking speed** on this project's 2-core CPU machine (`benchmarks/bench_mark.py speed`, fp32; the "
            "limit is a bare forward + input-gradient loop of the same network on the same machine):",
            "",
            "| marking network | input | steps | batch | images/s | image-steps/s | bare loop (image-steps/s) | "
            "fraction of the bare loop |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, label in (("fashion_mnist_cnn", "built-in cnn"), ("resnet18_224", "ResNet-18")):
            row = speed.get(name)
            if row:
                size = "×".join(str(v) for v in row["marker_input_size"])
                bare = row.get("bare_forward_input_grad_image_steps_per_second")
                share = row.get("fraction_of_bare_loop")
                out.append(
                    f"| {label} | {size} | {row['steps']} | {row['batch_size']} | {f(row['images_per_second'], 3)} | "
                    f"{f(row['image_steps_per_second'], 1)} | {f(bare, 1) if bare else '–'} | "
                    f"{f'{100 * share:.0f} %' if share else '–'} |"
                )
        out.append("")
    return out


def large_tree() -> list[str]:
    tree = load("large_tree.json")
    if not tree:
        return []
    config, listed = tree["config"], tree["list_and_select"]
    return [
        f"**Large datasets** (`benchmarks/bench_large_tree.py`): a tree of {config['images']:,} {config['size']}×"
        f"{config['size']} {config['format']} images in {config['classes']} classes, {100 * config['fraction']:g} % "
        "marked:",
        "",
        "| step | wall time (s) | peak memory (MiB) |",
        "|---|---|---|",
        f"| list + select + output names | {f(listed['list_s'] + listed['select_s'] + listed['output_names_s'])} "
        f"(+ {f(listed['import_s'])} imports) | {listed['peak_rss_mib']:.0f} |",
        f"| full `radioactive mark` ({config['steps']}-step marking, every other image copied) | "
        f"{f(tree['mark_copy']['wall_s'], 1)} | {tree['mark_copy']['peak_rss_mib']:.0f} |",
        f"| rerun of the finished output: verify and exit ({tree['rerun_copy']['files_hashed']:,} files hashed) | "
        f"{f(tree['rerun_copy']['wall_s'], 1)} | {tree['rerun_copy']['peak_rss_mib']:.0f} |",
        f"| rerun with `--verify full` ({tree['rerun_copy_verify_full']['files_hashed']:,} files hashed) | "
        f"{f(tree['rerun_copy_verify_full']['wall_s'], 1)} | {tree['rerun_copy_verify_full']['peak_rss_mib']:.0f} |",
        "",
    ]


def calibration() -> list[str]:
    cal = load("calibration.json")
    if not cal:
        return []
    out = [
        "**Calibration on clean models** (`benchmarks/bench_calibration.py`, "
        f"{cal.get('total_seconds', 0) / 60:.0f} min): white-box over "
        f"{cal['settings']['white_keys']} random keys per model; every black-box variant over "
        f"{cal['settings']['black_keys']} random keys (probes {cal['blackbox_setup']['probes']}, "
        f"K = {cal['blackbox_setup']['controls']}).",
        "",
        "| test | model / carriers | keys | FPR at 0.05 (99 % bound) | KS p (uniformity) |",
        "|---|---|---|---|---|",
    ]
    for name, row in cal["whitebox"].items():
        out.append(
            f"| white-box | {name} | {row['n']} | {f(row['fpr@0.05'], 4)} ({row['upper99@0.05'] / row['n']:.3f}) | "
            f"{f(row['ks_pvalue'], 3)} |"
        )
    worst: dict[str, float] = {}
    for row in cal["blackbox"].values():
        if not isinstance(row, dict) or "n" not in row:
            continue
        for alpha in ("0.01", "0.05", "0.1"):
            worst[alpha] = max(worst.get(alpha, 0.0), row[f"fpr@{alpha}"])
    count = sum(1 for row in cal["blackbox"].values() if isinstance(row, dict) and "n" in row)
    out += [
        "",
        f"Black-box: {count} combinations (2 clean suspects × statistics margin/prob/loss/label × rank, t, "
        "exact permutation, each with and without a clean reference model) — the largest empirical "
        f"P(p ≤ α) over all of them: {f(worst.get('0.01'), 2)} at α = 0.01, {f(worst.get('0.05'), 2)} at 0.05, "
        f"{f(worst.get('0.1'), 2)} at 0.1 (all within binomial error: "
        f"{'yes' if cal.get('blackbox_ok') else 'no'}).",
        "",
    ]
    return out


def whitebox() -> list[str]:
    wb = load("whitebox.json")
    if not wb:
        return []
    speed = wb["speed"]
    out = [
        f"**White-box speed**: {speed['reference_images']:,} reference images, best of "
        f"{len(speed['seconds'])} runs: {f(speed['best_seconds'], 1)} s on {speed['threads']} CPU threads "
        "(`benchmarks/bench_whitebox.py`).",
        "",
    ]
    control = wb.get("positive_control_b")
    if control:
        out += [
            f"**Positive control**: a linear classifier on the marker's frozen features, "
            f"{control['train_images']:,} training images, all / 10 % / none of them marked:",
            "",
            "| classifier | marked | white-box log10 p | mean cosine | test accuracy |",
            "|---|---|---|---|---|",
        ]
        for kind, fractions in control["fractions"].items():
            for frac, res in sorted(fractions.items(), key=lambda kv: -float(kv[0])):
                out.append(
                    f"| {kind.replace('_', ' ')} | {100 * float(frac):.0f} % | {f(res['log10_p'])} | "
                    f"{f(res.get('mean_cosine'), 3)} | {f(100 * res['test_accuracy'], 1)} % |"
                )
        out.append("")
    return out


def reliability() -> list[str]:
    out = []
    fuzz = load("fuzz.json")
    if fuzz:
        parts = [
            f"{name.replace('_', ' ')} {row['cases']:,} cases, {row['crashes']} crashes"
            for name, row in fuzz["targets"].items()
        ]
        out += ["**Fuzzing** (`benchmarks/bench_fuzz.py`, hypothesis): " + "; ".join(parts) + ".", ""]
    kill = load("kill_resume.json")
    if kill:
        out += [
            f"**Kill and resume** (`benchmarks/bench_kill_resume.py`): {kill.get('trials')} SIGKILL trials, "
            f"{kill.get('ok')} reruns byte-identical to an uninterrupted run ({kill.get('killed_mid_run')} killed mid-run).",
            "",
        ]
    return out
