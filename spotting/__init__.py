"""spotting: train, evaluate and run the AU-aware graph network (AUW-GCN) on flowcore features."""
