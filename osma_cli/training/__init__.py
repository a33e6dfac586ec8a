"""Training osma's embedding networks and POSE's classifier (docs/training.md, docs/pose.md).

One job per module:

- ``config``: what a run is told and gives back (``RunConfig`` and its ``TrainConfig`` and
  ``PretrainConfig``, ``PoseOptions``, ``RunResult`` and its ``TrainResult`` and
  ``PretrainResult``), and the checks of its output paths;
- ``data``: data preparation (files and splits, readable datasets, class checks, digests,
  the validation references' sample), for every training;
- ``network``: the network a run starts from (``build_network``: from scratch or ``--init``);
- ``schedule``: the paper's step-decay schedules (``StepDecay``; metric learning,
  pre-training, POSE) and the optimiser's parameter groups (proxies on a faster rate);
- ``losses``: ProxyNCA++, the pre-training classifier head, POSE's batch-hard triplets;
- ``step``: what one training step is (the ``Step`` protocol) and ``LossStep`` (a network
  and a loss: metric learning and pre-training);
- ``loop``: ``fit(step, dataset, ...)``, the one epoch loop (sample order, batches,
  validation, the best network, checkpoints);
- ``distributed``: the process's context under ``torchrun`` (``DistContext``, ``distributed``);
- ``sync_bn``: batch normalisation with statistics pooled over the processes under torchrun;
- ``checkpoint``: the training state for ``--resume`` (safetensors + JSON, never pickle);
- ``validation``: the validators ``fit`` calls after every epoch;
- ``provenance``: where weights came from (the source commit, the environment), for recipes;
- ``metric``: ``train_embedding(TrainConfig)``, ProxyNCA++ metric learning (``osma train``);
- ``pretrain``: ``pretrain(PretrainConfig)``, camera-model pre-training (``osma pretrain``);
- ``pose``: ``train_pose(TrainConfig, PoseOptions)`` and its ``PoseStep``
  (``osma train --method pose``); ``pose_aug``: its augmentation models;
- ``fsd``, ``fsd_detector``: the closed-form fits of ``--method fsd`` and ``fsd-detector``.

Import from the module that holds a name: ``from osma_cli.training.config import TrainConfig``.
"""
