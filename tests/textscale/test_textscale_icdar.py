"""The ICDAR 2015 protocol on hand-computed cases: exact matches, don't care, split and merged boxes, greedy order."""

from __future__ import annotations

import numpy as np
import pytest

from textscale.icdar import (
    IcdarFormatError,
    TextBox,
    evaluate,
    evaluate_folders,
    evaluate_image,
    read_boxes,
    write_boxes,
)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def gt(x0, y0, x1, y1, text="word") -> TextBox:
    return TextBox(rect(x0, y0, x1, y1), text)


def test_exact_match_and_false_positive():
    r = evaluate_image([gt(0, 0, 10, 10)], [rect(0, 0, 10, 10), rect(50, 50, 60, 60)])
    assert (r.matches, r.care_gt, r.care_det) == (1, 1, 2)


def test_split_box_matches_nothing_because_iou_must_exceed_half():
    # each half has IoU exactly 0.5 with the 20x10 ground truth: the rule is strict (> 0.5)
    r = evaluate_image([gt(0, 0, 20, 10)], [rect(0, 0, 10, 10), rect(10, 0, 20, 10)])
    assert r.matches == 0 and r.care_det == 2


def test_merged_box_matches_neither_word():
    # one 21x10 detection over two 10x10 words: IoU 100/210 with each
    r = evaluate_image([gt(0, 0, 10, 10), gt(11, 0, 21, 10)], [rect(0, 0, 21, 10)])
    assert r.matches == 0 and (r.care_gt, r.care_det) == (2, 1)


def test_slightly_larger_detection_matches():
    r = evaluate_image([gt(0, 0, 10, 10)], [rect(0, 0, 10, 12)])  # IoU 100/120
    assert r.matches == 1


def test_dont_care_by_area_precision():
    dc = gt(0, 0, 10, 10, "###")
    inside = rect(2, 2, 8, 8)  # wholly inside: don't care, counts neither way
    half = rect(5, 0, 15, 10)  # exactly half inside: 0.5 is not > 0.5, a care false positive
    r = evaluate_image([dc, gt(100, 0, 110, 10)], [inside, half, rect(100, 0, 110, 10)])
    assert r.det_dont_care == [0]
    assert (r.matches, r.care_gt, r.care_det) == (1, 1, 2)


def test_dont_care_detection_never_matches_a_care_box():
    # a care word inside a larger don't-care region: the detection on the word is don't care and is not matched
    r = evaluate_image([gt(0, 0, 100, 100, "###"), gt(10, 10, 20, 20)], [rect(10, 10, 20, 20)])
    assert (r.matches, r.care_gt, r.care_det) == (0, 1, 0)


def test_greedy_first_fit_in_file_order_not_hungarian():
    # gt1 overlaps det1 and det2 (IoU 0.7 each), gt2 only det1 (0.75): greedy gives gt1-det1 and leaves gt2 unmatched,
    # where an optimal assignment would match both
    gts = [gt(0, 0, 10, 10), gt(0, -1, 10, 6)]
    dets = [rect(0, 0, 10, 7), rect(0, 3, 10, 10)]
    assert evaluate_image(gts, dets).matches == 1
    assert evaluate_image(gts[::-1], dets).matches == 2  # gt2 first takes det1, then gt1 takes det2


def test_pooled_over_images():
    m = evaluate(
        {"img_1": [gt(0, 0, 10, 10)], "img_2": [gt(0, 0, 10, 10), gt(20, 0, 30, 10), gt(40, 0, 50, 10)]},
        {"img_1": [rect(0, 0, 10, 10)]},
    )
    assert (m.matches, m.care_gt, m.care_det) == (1, 4, 1)
    assert m.precision == 1.0 and m.recall == 0.25 and m.hmean == pytest.approx(0.4)


def test_recall_by_height_bins():
    small, large = gt(0, 0, 30, 6), gt(0, 100, 200, 140)  # heights 6 and 40
    m = evaluate({"img_1": [small, large]}, {"img_1": [rect(0, 100, 200, 140)]})
    assert m.recall_by_height == {"0-8": 0.0, "32-64": 1.0}
    assert m.gt_by_height["0-8"] == 1 and m.gt_by_height["8-16"] == 0


def test_no_detections_and_no_ground_truth():
    m = evaluate({"img_1": []}, {})
    assert (m.precision, m.recall, m.hmean) == (0.0, 0.0, 0.0)


def test_file_round_trip_bom_commas_and_float_truncation(tmp_path):
    (tmp_path / "gt_img_1.txt").write_text(
        "\ufeff1,2,11.9,2,11,12,1,12,Hello, world\n0,0,5,0,5,5,0,5,###\n\n"
    )
    boxes = read_boxes(tmp_path / "gt_img_1.txt")
    assert boxes[0].text == "Hello, world" and boxes[0].points[1].tolist() == [11, 2]
    assert boxes[1].dont_care
    write_boxes(tmp_path / "res_img_1.txt", [b.points for b in boxes])
    again = read_boxes(tmp_path / "res_img_1.txt")
    assert [b.text for b in again] == ["", ""]
    assert np.array_equal(again[0].points, boxes[0].points)


def test_result_line_with_confidence_is_not_a_transcription(tmp_path):
    (tmp_path / "res_img_1.txt").write_text("0,0,10,0,10,10,0,10,0.93\n")
    assert read_boxes(tmp_path / "res_img_1.txt")[0].text == ""


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "gt_img_1.txt").write_text("0,0,10,0,10,10,0,10,a\n1,2,3\n")
    with pytest.raises(IcdarFormatError, match="gt_img_1.txt:2"):
        read_boxes(tmp_path / "gt_img_1.txt")


def test_evaluate_folders(tmp_path):
    gt_dir, res_dir = tmp_path / "gt", tmp_path / "res"
    gt_dir.mkdir()
    for n in (1, 2):
        (gt_dir / f"img_{n}.jpg").write_bytes(b"")
        write_boxes(gt_dir / f"gt_img_{n}.txt", [rect(0, 0, 10, 10)], ["a"])
    write_boxes(res_dir / "res_img_2.txt", [rect(0, 0, 10, 10)])
    m = evaluate_folders(gt_dir, res_dir)
    assert (m.matches, m.care_gt, m.care_det) == (1, 2, 1)
    with pytest.raises(IcdarFormatError, match="no img_N"):
        evaluate_folders(res_dir, res_dir)


def test_mlt_lines_with_a_script_column(tmp_path):
    (tmp_path / "gt_img_1.txt").write_text(
        "0,0,10,0,10,10,0,10,Latin,Hello, you\n0,0,5,0,5,5,0,5,Arabic,###\n"
    )
    boxes = read_boxes(tmp_path / "gt_img_1.txt")
    assert boxes[0].text == "Hello, you" and boxes[1].dont_care
