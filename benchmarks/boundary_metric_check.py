"""How much the authors' definitions of mBA and boundary IoU move the numbers of the earlier ones.

On random 640x480 binary blob masks (a smooth random field, thresholded; three in four touch the frame)
with coarse predictions (the mask downsampled 8x and upsampled back, plus a few pixels of
dilation or erosion), this prints, per image and over the set:

- mBA with CascadePSP's element (OpenCV's ``MORPH_ELLIPSE``, :func:`spn.metrics.boundary.ellipse_kernel`)
  against the earlier disk ``x^2 + y^2 <= r^2``; at 640x480 the radii are 1, 1, 2, 2, 3;
- boundary IoU of the object with the image frame as a contour (the authors' ``mask_to_boundary``)
  against the frame-free variant (``frame=False``);
- the headline boundary IoU as ``BoundaryScores(2)`` now reports it (the object, per image, mean
  over images, frame) against the earlier one (both classes, intersections and unions summed over
  the images, mean over the classes, no frame).

Run: ``PYTHONPATH=src python benchmarks/boundary_metric_check.py [--images 20] [--seed 0]``
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from spn.metrics.boundary import BoundaryScores, boundary_region, boundary_width, gradient_region, mba_radii


def blob(gen, H=480, W=640, cell=None):
    cell = cell or int(torch.randint(24, 96, (1,), generator=gen))
    small = torch.randn(1, 1, max(2, H // cell), max(2, W // cell), generator=gen)
    field = F.interpolate(small, size=(H, W), mode="bicubic", align_corners=False)[0, 0]
    return (field > float(torch.empty(1).uniform_(-0.3, 0.6, generator=gen))).long()


def coarse(mask, gen):
    H, W = mask.shape
    small = F.interpolate(mask[None, None].float(), scale_factor=1 / 8, mode="area")
    up = F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    k = int(torch.randint(-3, 4, (1,), generator=gen))  # grow (k > 0) or shrink the mask by |k| px
    m = up > 0.5
    if k:
        x = (m if k > 0 else ~m)[None, None].float()
        x = F.max_pool2d(x, 2 * abs(k) + 1, stride=1, padding=abs(k))[0, 0] > 0
        m = x if k > 0 else ~x
    return m.long()


def disk_region(labels, r):
    """The earlier mBA region: a disk x^2 + y^2 <= r^2 (inside the image) meets two labels."""
    y, x = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    k = ((x * x + y * y) <= r * r).float()[None, None]
    present = sum((F.conv2d((labels == c).float()[None, None], k, padding=r)[0, 0] > 0.5).int()
                  for c in torch.unique(labels).tolist())
    return present >= 2


def mba_image(pred, gt, region_fn):
    accs = []
    for r in mba_radii(gt.shape):
        region = region_fn(gt, r)
        accs.append(float((pred[region] == gt[region]).float().mean()))
    return sum(accs) / len(accs)


def biou_image(pred, gt, frame, c=1):
    d = boundary_width(gt.shape)
    bg, bp = boundary_region(gt == c, d, frame), boundary_region(pred == c, d, frame)
    return float((bg & bp).sum()) / float((bg | bp).sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    new = BoundaryScores(2, widths=(1,))
    inter, union = torch.zeros(2), torch.zeros(2)  # the earlier headline: summed, both classes, no frame
    for i in range(args.images):
        gt = blob(gen)
        if i % 4 == 3:  # every fourth object kept off the frame: the frame changes nothing there
            gt[:24], gt[-24:], gt[:, :24], gt[:, -24:] = 0, 0, 0, 0
        if gt.min() == gt.max():
            gt[200:280, 280:360] = 1 - gt[200, 280]
        pred = coarse(gt, gen)
        new.update(pred, gt)
        d = boundary_width(gt.shape)
        for c in (0, 1):
            bg, bp = boundary_region(gt == c, d, False), boundary_region(pred == c, d, False)
            inter[c] += float((bg & bp).sum())
            union[c] += float((bg | bp).sum())
        touches = bool(gt[0].any() or gt[-1].any() or gt[:, 0].any() or gt[:, -1].any())
        rows.append((i, touches, mba_image(pred, gt, gradient_region), mba_image(pred, gt, disk_region),
                     biou_image(pred, gt, True), biou_image(pred, gt, False)))
    print(f"{args.images} images 640x480, seed {args.seed}; radii {mba_radii((480, 640))}, d = {boundary_width((480, 640))}")
    print("image  frame  mBA ellipse  mBA disk  diff | bIoU frame  bIoU no frame  diff   (points)")
    for i, t, me, md, bf, bn in rows:
        print(f"{i:5d}  {'yes' if t else 'no ':5s}  {100 * me:11.2f}  {100 * md:8.2f}  {100 * (me - md):+5.2f}"
              f" | {100 * bf:10.2f}  {100 * bn:13.2f}  {100 * (bf - bn):+5.2f}")
    dm = [100 * abs(r[2] - r[3]) for r in rows]
    db = [100 * abs(r[4] - r[5]) for r in rows]
    m = new.compute()
    old_headline = float((inter / union).mean())
    print(f"mBA   |ellipse - disk|: median {statistics.median(dm):.2f}, max {max(dm):.2f} points; "
          f"set mean {100 * statistics.fmean(r[2] for r in rows):.2f} (ellipse) vs "
          f"{100 * statistics.fmean(r[3] for r in rows):.2f} (disk)")
    print(f"bIoU  |frame - frame-free| (object): median {statistics.median(db):.2f}, max {max(db):.2f} points")
    print(f"headline boundary IoU: now {100 * m['boundary_iou']:.2f} (object, per image, frame); "
          f"earlier {100 * old_headline:.2f} (2 classes, summed, no frame); mBA now {100 * m['mba']:.2f}")


if __name__ == "__main__":
    main()
