"""One module per DVC stage, each holding the stage's plain function (what tests call) and its click
command (what dvc.yaml runs as ``python -m dnnprobe.stages.<stage>``):

stimuli -> check -> network -> extract -> gram -> probe -> report
"""
