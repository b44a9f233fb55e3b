"""flowcore: turn face videos into motion features (landmarks, TV-L1 flow, 12-ROI MDMO).

Knows nothing about labels or models.
"""
