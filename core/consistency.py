"""Cross-line consistency: a second detector, which asks whether each line can be predicted from the others.

The autoencoder's score (``core.scoring``) asks "does the model reproduce these maps?"; a
galaxy whose lines disagree with each other (one line's morphology turned against the
others', a patch with odd ratios, an instrumental stripe in some lines) can still be
reproduced well enough to look ordinary, because the autoencoder sees every line at once.
This detector hides lines from a network and asks it to predict them:

1. The lines are grouped by ion (:func:`line_groups`: a doublet is hidden with its partner,
   so [OIII] 4960 cannot give [OIII] 5008 away). The map is cut into :data:`FOLDS` wedges
   about its centre, and each group is hidden in one wedge: the network
   (``core.models.linehider``) predicts it there from the other lines in the same cells and
   from the galaxy's own line ratios where the group is visible, over the whole galaxy and at
   the cell's radius (in the other wedges). :func:`fit` trains it on the
   run's training galaxies with random wedges and random assignments (and the eight
   rotations and flips), minimising the score's chi-square (with a smaller floor, ``FitConfig.floor``).
2. :func:`calibrate` then measures how well the trained network predicts each line: the
   line's floor ``f_l`` is the fraction of the prediction at which the median chi-square term
   of the training galaxies' measured cells is :data:`CHI2_MEDIAN`, the median of a chi-square
   with one degree of freedom (what a fitted Gaussian error gives). The median is not moved by
   the few odd galaxies or cells among them. The floors are kept with the weights.
3. :func:`cell_terms` hides every group in every wedge once (:data:`FOLDS` passes) and
   returns each line's chi-square term in each cell: ``(pred - x)^2 / (1/ivar + (f_l pred)^2)``.
   A galaxy's ``score_consistency`` (:func:`galaxy_scores`) is the mean reduced chi-square
   (over its lines) of its worst :data:`TOP_FRACTION` of cells, counting cells where at
   least half the lines are measured: a compact oddity is not diluted by the rest of the galaxy.

Why a floor per line: the network predicts Halpha to ~15 % and HeII to ~70 %, so one floor either
lets the weak lines' misfit dominate every galaxy's score or hides the strong lines' oddities, and
it makes the score grow with the galaxy's signal-to-noise (on the demo survey, the ordinary
galaxies' score had a rank correlation of +0.58 with their central Halpha flux with one 6 % floor,
-0.18 with calibrated floors; ROC-AUC / AP of the true anomalies 0.962 / 0.596 -> 0.975 / 0.704).

Everything is in units of the galaxy's own Halpha level (:func:`normalise`: the
:data:`LEVEL_PCT`-th percentile of its measured Halpha cells, which a compact spot hardly
moves), so multiplying a galaxy's fluxes by c (and ivar by 1/c^2) leaves the score unchanged.
It is blind to what keeps every cell's line ratios ordinary (a region brighter or darker in
every line) and to changes below the noise; the autoencoder's score covers the first.
Measured on the demo survey: README.md, "The anomaly score".
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.errors import RunError

#: The line whose level every galaxy is divided by.
REF_LINE = "Ha-6564"
#: The percentile of the galaxy's measured Halpha cells that sets its level.
LEVEL_PCT = 90.0
#: Wedges about the map centre; each line group is hidden in one of them per pass.
FOLDS = 4
#: The median of a chi-square with one degree of freedom: each line's calibrated floor puts the
#: training galaxies' median term there (:func:`calibrate`).
CHI2_MEDIAN = 0.4549364
#: Galaxies and measured cells per line that :func:`calibrate` measures the floors on, at most.
CALIBRATION_GALAXIES = 1_000
CALIBRATION_CELLS = 200_000
#: The score is the mean reduced chi-square of this share of a galaxy's counted cells, the worst.
TOP_FRACTION = 0.10
#: Galaxies per forward pass.
BATCH = 64
#: The catalogue column.
COLUMN = "score_consistency"
#: Catalogue columns of how well the network predicts each galaxy (``evaluate`` reports the ordinary galaxies'
#: medians); written by ``embed`` from the predictions that score it.
FIT_COLUMNS = {
    "chi2_consistency": "reduced chi-square of the consistency network's predictions of hidden lines over every "
                        "measured line and cell, against the noise and each line's calibrated floor",
    "chi2_consistency_noise": "the same against the measured noise alone (1: predicted to the noise)",
}
DEFINITION = (
    "cross-line consistency: each ion's lines hidden in turn in each of "
    f"{FOLDS} wedges of the map and predicted by a network from the other lines and the galaxy's own ratios "
    "(over the galaxy and at each radius); "
    "the mean reduced chi-square (noise plus each line's calibrated error, the fraction of the prediction at which "
    f"the training galaxies' median term is that of a one-degree chi-square) of the worst {TOP_FRACTION:.0%} of "
    "the cells where at least half the lines are measured; independent of the flux scale and of the autoencoder"
)


@dataclass
class FitConfig:
    """How the consistency network is trained (``embed`` does it; stored in ``consistency.pt``)."""

    # passes over the training galaxies: 9 took ~75 s for the demo's 1,800 on 2 cores and found as much as 12
    # (demo AP 0.850 / 0.793 with seeds 1 / 0, against 0.842 / 0.791; benchmarks/README.md, "Five epochs, nine
    # for the network")
    epochs: int = 9
    batch_size: int = 32  # galaxies per step
    lr: float = 2e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4  # AdamW weight decay
    clip: float = 1.0  # gradient-norm clip: the chi-square of bright cells makes early steps violent without it
    floor: float = 0.03  # the loss's error floor, a fraction of the prediction (the score's are calibrated after)
    max_galaxies: int = 4_000  # training galaxies at most (a random subset, held in memory: ~1 GB at 32 x 32)
    seed: int = 0  # weights, subset, wedges and orientations


def line_groups(lines: Sequence[str]) -> list[list[int]]:
    """Indices of ``lines`` grouped by ion, in order of first appearance: a doublet is one group."""
    ions = [name.split("-")[0] for name in lines]
    return [[i for i, ion in enumerate(ions) if ion == g] for g in dict.fromkeys(ions)]


def _ref(lines: Sequence[str]) -> int:
    if REF_LINE not in lines:
        raise ValueError(f"the consistency detector needs {REF_LINE} among the lines; these are {list(lines)}")
    return list(lines).index(REF_LINE)


def normalise(flux, ivar, mask, ref: int):
    """``(x, ivar, good)`` float32 ``(N, L, S, S)`` in units of each galaxy's Halpha level; unusable cells 0."""
    flux, ivar = np.asarray(flux, np.float32), np.asarray(ivar, np.float32)
    good = ~np.asarray(mask, bool) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    flux, ivar = np.where(good, flux, 0), np.where(good, ivar, 0)
    ha = np.where(good[:, ref], flux[:, ref], np.nan).reshape(len(flux), -1)  # (N, S*S)
    level, measured = np.ones(len(flux)), np.isfinite(ha).any(1)
    if measured.any():  # a galaxy with no measured Halpha keeps level 1: its other lines still count
        level[measured] = np.nanpercentile(ha[measured], LEVEL_PCT, axis=1)
    level = np.where(level > 0, level, 1.0).astype(np.float32)[:, None, None, None]
    return flux / level, ivar * level**2, good.astype(np.float32)


def _wedges(size: int, angle):
    """``(B, S, S)`` the wedge of every cell, the first starting at ``angle`` (B,) radians."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    turn = (torch.atan2(yy, xx)[None] - angle[:, None, None]) % (2 * np.pi)  # (B, S, S)
    return (turn / (2 * np.pi / FOLDS)).long().clamp(max=FOLDS - 1)


def _hidden(wedge, assignment, member):
    """``(B, L, S, S)`` 1 where a line is hidden: group g in wedge ``assignment[:, g]``; ``member`` (G, L)."""
    import torch

    by_group = (wedge[:, None] == assignment[:, :, None, None]).float()  # (B, G, S, S)
    return torch.einsum("bgij,gl->blij", by_group, member).clamp(max=1)


def _terms(pred, x, ivar, weight, floor):
    """Chi-square terms ``(B, L, S, S)``; ``floor`` a fraction of the prediction, one or one per line (L,)."""
    import torch

    floor = torch.as_tensor(floor, dtype=pred.dtype, device=pred.device).reshape(-1, 1, 1)  # (1 or L, 1, 1)
    # The floor follows the prediction held fixed: with gradients through it, predicting an enormous
    # flux would cap every term at 1 / floor^2, and training finds that way out.
    return (pred - x) ** 2 * ivar / (1 + ivar * (floor * pred.detach()) ** 2) * weight


def _member(lines):
    import torch

    groups = line_groups(lines)
    member = torch.zeros(len(groups), len(lines))
    for g, idx in enumerate(groups):
        member[g, idx] = 1
    return member


def fit(flux, ivar, mask, lines: Sequence[str], rows, config: FitConfig = FitConfig(), device="cpu",
        progress: bool = True):
    """Train the consistency network on the galaxies ``rows`` of ``flux``, ``ivar``, ``mask`` ``(N, L, S, S)``.

    Raises ValueError when the lines lack Halpha or no galaxy is given.
    """
    import torch

    from core.models.linehider import LineHider, LineHiderArgs
    from core.torchdata import dihedral

    ref = _ref(lines)
    rng = np.random.default_rng(config.seed)
    rows = np.asarray(rows)
    if len(rows) > config.max_galaxies:
        rows = np.sort(rng.choice(rows, config.max_galaxies, replace=False))
    if len(rows) == 0:
        raise ValueError("no galaxies to train the consistency network on")
    x, iv, good = (torch.from_numpy(a) for a in normalise(flux[rows], ivar[rows], mask[rows], ref))
    torch.manual_seed(config.seed)
    model = LineHider(LineHiderArgs(n_lines=len(lines))).to(device)
    member = _member(lines)
    batch = min(config.batch_size, len(rows))
    steps = max(1, len(rows) // batch)
    opt = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        order, total = rng.permutation(len(rows)), 0.0
        for step in range(steps):
            pick = torch.from_numpy(order[step * batch:(step + 1) * batch])
            turn = int(rng.integers(8))
            xb, ib, gb = (dihedral(t[pick], turn).to(device) for t in (x, iv, good))  # (B, L, S, S)
            angle = torch.from_numpy(rng.uniform(0, 2 * np.pi, len(pick))).float()
            assignment = torch.from_numpy(rng.integers(0, FOLDS, (len(pick), len(member))))
            hide = _hidden(_wedges(xb.shape[-1], angle), assignment, member).to(device)  # (B, L, S, S)
            terms = _terms(model(xb, gb * (1 - hide)), xb, ib, gb * hide, config.floor)
            loss = terms.sum() / (gb * hide).sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            opt.step()
            schedule.step()
            total += loss.item()
        if progress:
            print(f"consistency: epoch {epoch + 1}/{config.epochs}  chi-square of the hidden lines "
                  f"{total / steps:.3g}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    calibrate(model.eval(), flux, ivar, mask, lines, rows, device, seed=config.seed)
    return model.cpu()


def calibrate(model, flux, ivar, mask, lines: Sequence[str], rows, device="cpu", seed: int = 0) -> np.ndarray:
    """Set and return ``model.floors`` (L,): each line's floor, the fraction of the prediction at which the
    median chi-square term of its measured cells in the galaxies ``rows`` is :data:`CHI2_MEDIAN`.

    At most :data:`CALIBRATION_GALAXIES` galaxies and :data:`CALIBRATION_CELLS` cells per line, drawn with
    ``seed``. A line the network predicts to within the noise gets 0; one never measured keeps 0.
    """
    import torch

    rng = np.random.default_rng(seed)
    rows = np.asarray(rows)
    if len(rows) > CALIBRATION_GALAXIES:
        rows = np.sort(rng.choice(rows, CALIBRATION_GALAXIES, replace=False))
    parts = [(pred.cpu(), x.cpu(), iv.cpu(), good.cpu()) for _, x, iv, good, pred in
             _hidden_predictions(model, flux[rows], ivar[rows], mask[rows], lines, BATCH, device)]
    pred, x, iv, good = (torch.cat(p).transpose(0, 1).reshape(len(lines), -1) for p in zip(*parts))  # (L, N*S*S)
    floors = np.zeros(len(lines), np.float32)
    for line in range(len(lines)):
        cells = torch.nonzero(good[line] > 0).flatten()
        if len(cells) > CALIBRATION_CELLS:
            cells = cells[torch.from_numpy(rng.choice(len(cells), CALIBRATION_CELLS, replace=False))]
        if not len(cells):
            continue
        p, d2iv, v = pred[line, cells], (pred[line, cells] - x[line, cells]) ** 2 * iv[line, cells], iv[line, cells]
        lo, hi = 0.0, 4.0  # the median term falls as the floor grows: bisect for CHI2_MEDIAN
        if torch.median(d2iv) <= CHI2_MEDIAN:
            continue
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if torch.median(d2iv / (1 + v * (mid * p) ** 2)) > CHI2_MEDIAN else (lo, mid)
        floors[line] = hi
    model.floors.copy_(torch.from_numpy(floors))
    return floors


def save(model, path, lines: Sequence[str], config: FitConfig) -> None:
    """Write ``consistency.pt``: the network's arguments, lines, training configuration and weights."""
    import torch

    from core.io import atomic_path

    payload = {"model_args": asdict(model.args), "lines": list(lines), "config": asdict(config),
               "definition": DEFINITION, "state_dict": model.state_dict()}
    # Through a file object: given a path, torch names the archive's folder after the temporary
    # file, and the same network would be written as different bytes on every embed.
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def load(path, lines: Sequence[str], repair: str):
    """The network saved in ``path`` for ``lines``; RunError (naming the file and ``repair``) when it cannot be."""
    import torch

    from core.models.linehider import LineHider, LineHiderArgs

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        # A network saved before the rings existed has none (rings=0) and scores as it always did.
        model = LineHider(LineHiderArgs(**{"rings": 0, **payload["model_args"]}))
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # truncated, not a torch file, another layout: all say the same to a user
        raise RunError(f"{path}: the consistency network could not be read ({type(exc).__name__}); {repair}") from exc
    if list(payload.get("lines", [])) != list(lines):
        raise RunError(f"{path}: the consistency network was trained on other lines; {repair}")
    return model.eval()


def _hidden_predictions(model, flux, ivar, mask, lines: Sequence[str], batch: int, device):
    """Yield ``(rows, x, ivar, good, pred)`` per batch of galaxies, torch ``(B, L, S, S)`` in the galaxy's
    units: every line in every cell predicted by the one pass that hid it (:data:`FOLDS` passes)."""
    import torch

    ref, member = _ref(lines), _member(lines).to(device)
    model = model.to(device)
    with torch.no_grad():
        for start in range(0, len(flux), batch):
            rows = slice(start, min(start + batch, len(flux)))
            x, iv, good = (torch.from_numpy(a).to(device) for a in normalise(flux[rows], ivar[rows], mask[rows], ref))
            wedge = _wedges(x.shape[-1], torch.zeros(len(x))).to(device)
            pred = torch.zeros_like(x)
            for p in range(FOLDS):
                assignment = ((torch.arange(len(member), device=device) + p) % FOLDS)[None].expand(len(x), -1)
                hide = _hidden(wedge, assignment, member)  # (B, L, S, S)
                pred += model(x, good * (1 - hide)) * hide
            yield rows, x, iv, good, pred


def cell_terms(model, flux, ivar, mask, lines: Sequence[str], batch: int = BATCH, floor=None, device="cpu",
               noise=None):
    """``(terms, good)``: each line's chi-square term in each cell ``(N, L, S, S)`` with every line predicted
    while hidden, and where it was measured (bool); ``floor`` None: the network's calibrated floors, 0: against
    the noise alone. With ``noise`` (an ``(N,)`` array) each galaxy's reduced chi-square against the noise alone,
    over every measured line and cell, is written into it from the same predictions."""
    terms, good_all = np.zeros(np.shape(flux), np.float32), np.zeros(np.shape(flux), bool)
    floor = model.floors if floor is None else floor
    for rows, x, iv, good, pred in _hidden_predictions(model, flux, ivar, mask, lines, batch, device):
        terms[rows], good_all[rows] = _terms(pred, x, iv, good, floor).cpu().numpy(), good.cpu().numpy() > 0
        if noise is not None:
            against_noise = _terms(pred, x, iv, good, 0.0).sum((1, 2, 3)) / good.sum((1, 2, 3)).clamp(min=1)  # (B,)
            noise[rows] = against_noise.cpu().numpy()
    return terms, good_all


def cell_map(terms, good) -> np.ndarray:
    """``(N, S, S)`` float32 each cell's reduced chi-square over its measured lines (NaN where none is):
    where on the galaxy the lines disagree (the app's why view draws its square root, in sigma)."""
    measured = good.sum(1)  # (N, S, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(measured > 0, terms.sum(1) / measured, np.nan).astype(np.float32)


def galaxy_scores(terms, good, shares=None) -> np.ndarray:
    """``score_consistency`` of each galaxy ``(N,)`` from :func:`cell_terms`; NaN where no cell counts.

    With ``shares`` (an ``(N, L)`` array) each line's share of the score (of the summed terms in the
    galaxy's worst cells, summing to 1; NaN where no cell counts) is written into it: which lines disagree.
    """
    n_lines = terms.shape[1]
    measured = good.sum(1)  # (N, S, S)
    per_cell = terms.sum(1) / np.maximum(measured, 1)  # (N, S, S)
    out = np.full(len(terms), np.nan)
    for i in range(len(terms)):
        counted = np.flatnonzero(measured[i].ravel() >= n_lines / 2)
        if shares is not None:
            shares[i] = np.nan
        if not counted.size:
            continue
        top = max(1, int(round(TOP_FRACTION * counted.size)))
        worst = counted[np.argpartition(per_cell[i].ravel()[counted], counted.size - top)[counted.size - top:]]
        out[i] = per_cell[i].ravel()[worst].mean()
        if shares is not None:
            by_line = terms[i].reshape(n_lines, -1)[:, worst].sum(1)  # (L,)
            shares[i] = by_line / by_line.sum() if by_line.sum() > 0 else np.nan
    return out


def consistency_scores(model, flux, ivar, mask, lines: Sequence[str], batch: int = BATCH, maps=None,
                       shares=None, fits=None, device="cpu", progress: bool = False) -> np.ndarray:
    """``score_consistency`` of each galaxy ``(N,)``, in blocks so a large survey is never held at once;
    with ``maps`` (an ``(N, S, S)`` array, e.g. a memmap) each galaxy's :func:`cell_map` is written into it,
    with ``shares`` (``(N, L)``) each line's share of the score (:func:`galaxy_scores`), with ``fits``
    (``(N, 2)``) the galaxy's :data:`FIT_COLUMNS`: how well the network predicts it, from the same predictions."""
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(flux), 1024), desc="consistency", unit="block", disable=not progress):
        block = slice(start, start + 1024)
        noise = None if fits is None else np.empty(len(flux[block]))
        terms, good = cell_terms(model, flux[block], ivar[block], mask[block], lines, batch, device=device,
                                 noise=noise)
        out.append(galaxy_scores(terms, good, None if shares is None else shares[block]))
        if maps is not None:
            maps[block] = cell_map(terms, good)
        if fits is not None:
            fits[block, 0] = terms.sum((1, 2, 3)) / np.maximum(good.sum((1, 2, 3)), 1)
            fits[block, 1] = noise
    return np.concatenate(out) if out else np.empty(0)
