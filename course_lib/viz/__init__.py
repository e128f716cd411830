"""Pictures, one module per concept, each drawn from the data of a real run:

    collectives.py   what each rank holds before and after a collective (chapter 0)
    ddp.py           one DDP step: buckets overlapping the backward pass (chapter 4)
    zero.py          model state per rank at each ZeRO stage, against the formula (chapter 4)
"""
