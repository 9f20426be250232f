"""One module per DVC stage, each holding the stage's plain function (what tests call) and its click
command (what dvc.yaml runs as ``python -m dnnprobe.stages.<stage>``):

params (the whole params.yaml, whenever the file changes), then
stimuli -> check -> network -> extract -> gram -> probe -> report
"""
