"""The 12 regions of interest (ROIs) of AUW-GCN and their landmark anchors.

Each ROI is an 11 x 11 px square centred on one landmark (0-based iBUG 300-W index); the node
order below is the graph's node order (AUWGCN.md section 3, step 4).
"""

ROI_LANDMARKS = (18, 19, 20, 23, 24, 25, 28, 30, 48, 51, 54, 57)
ROI_NAMES = (
    "right brow outer", "right brow middle", "right brow inner",
    "left brow inner", "left brow middle", "left brow outer",
    "nose bridge", "nose tip",
    "mouth right corner", "upper lip", "mouth left corner", "lower lip",
)  # subject's right is the image's left
ROI_RADIUS = 5  # px: patches are (2 * 5 + 1) = 11 px wide
N_ROIS = len(ROI_LANDMARKS)
