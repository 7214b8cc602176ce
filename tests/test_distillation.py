"""KD4MTL's distillation (losses/distillation.py, MTAN.forward_with_features) against a transcription of the
original's (akarimoon/xtask_mt, commit 167ee59: model/kd4mtl/model_mtan_kdmtl_2tasks.py,
model/kd4mtl/model_mtan_kdmtl.py, model/kd4mtl/model/mtan.py, model/kd4mtl/model/mtan_single.py): the
adaptors, the loss on fixed random tensors, the loss's zero, where gradients go, and the distilled features."""
import pytest
import torch
import torch.nn.functional as F
import torch.optim as optim

from losses.distillation import (DistillationTerms, TaskAdaptors, adaptor_optimizer, distillation_loss,
                                 original_task_weights, teacher_features)
from models.mtan import MTAN
from test_mtan import (KD4MTL_TASK_NAMES, OriginalSegNetMTAN, OriginalSingleTaskSegNet, mtan_with_weights_of,
                       original_trunk, randomise_)

TWO_TASKS = ("segmentation", "depth")
THREE_TASKS = ("segmentation", "depth", "normal")


# --- Transcription of the original (commit 167ee59), as written there but for the teachers' forward.

class transformer(torch.nn.Module):
    """model/kd4mtl/model_mtan_kdmtl_2tasks.py:39-49 (model_mtan_kdmtl.py:37-47)."""

    def __init__(self):
        super(transformer, self).__init__()
        self.conv1 = torch.nn.Conv2d(512, 512, 1, bias=False)
        self.conv2 = torch.nn.Conv2d(64, 64, 1, bias=False)

    def forward(self, inputs):
        results = []
        results.append(self.conv1(inputs[0]))
        results.append(self.conv2(inputs[1]))
        return results


def original_dist_loss(feat_s, feat_t, transformers, lambda_):
    """model/kd4mtl/model_mtan_kdmtl_2tasks.py:158-180 (model_mtan_kdmtl.py:142-164), `feat_t[i]` in place
    of the teacher's `_, feat_ti = single_model[i](train_data)` under torch.no_grad()."""
    dist_loss = []
    for i in range(len(lambda_)):
        feat_ti = feat_t[i]
        feat_ti0 = feat_ti[0].detach()
        feat_ti0 = feat_ti0 / (feat_ti0.pow(2).sum(1) + 1e-6).sqrt().view(feat_ti0.size(0), 1, feat_ti0.size(2), feat_ti0.size(3))
        feat_ti1 = feat_ti[1].detach()
        feat_ti1 = feat_ti1 / (feat_ti1.pow(2).sum(1) + 1e-6).sqrt().view(feat_ti1.size(0), 1, feat_ti1.size(2), feat_ti1.size(3))
        feat_si = transformers[i](feat_s[i])
        feat_si0 = feat_si[0]
        feat_si0 = feat_si0 / (feat_si0.pow(2).sum(1) + 1e-6).sqrt().view(feat_si0.size(0), 1, feat_si0.size(2), feat_si0.size(3))
        feat_si1 = feat_si[1]
        feat_si1 = feat_si1 / (feat_si1.pow(2).sum(1) + 1e-6).sqrt().view(feat_si1.size(0), 1, feat_si1.size(2), feat_si1.size(3))
        dist_0 = (feat_si0 - feat_ti0).pow(2).sum(1).mean()
        dist_1 = (feat_si1 - feat_ti1).pow(2).sum(1).mean()
        dist_loss.append(dist_0 + dist_1)
    per_task = list(dist_loss)
    dist_loss = sum(dist_loss[i] * lambda_[i] for i in range(len(lambda_)))
    return dist_loss, per_task


def original_feat(net, x, task_count):
    """`feat` of the original's forward: model/kd4mtl/model/mtan.py:377-406 (SegNet2tasks; 140-169 for
    SegNet), model/kd4mtl/model/mtan_single.py:140-166 for one task; [[encoder, decoder] per task]."""
    g_encoder, g_decoder, g_upsampl = original_trunk(net, x)
    feat = []
    for i in range(task_count):
        atten_encoder = [[0] * 3 for _ in range(5)]
        atten_decoder = [[0] * 3 for _ in range(5)]
        for j in range(5):
            if j == 0:
                atten_encoder[j][0] = net.encoder_att[i][j](g_encoder[j][0])
            else:
                atten_encoder[j][0] = net.encoder_att[i][j](torch.cat((g_encoder[j][0], atten_encoder[j - 1][2]), dim=1))
            atten_encoder[j][1] = (atten_encoder[j][0]) * g_encoder[j][1]
            atten_encoder[j][2] = net.encoder_block_att[j](atten_encoder[j][1])
            atten_encoder[j][2] = F.max_pool2d(atten_encoder[j][2], kernel_size=2, stride=2)
        for j in range(5):
            previous = atten_encoder[-1][-1] if j == 0 else atten_decoder[j - 1][2]
            atten_decoder[j][0] = F.interpolate(previous, scale_factor=2, mode="bilinear", align_corners=True)
            atten_decoder[j][0] = net.decoder_block_att[-j - 1](atten_decoder[j][0])
            atten_decoder[j][1] = net.decoder_att[i][-j - 1](torch.cat((g_upsampl[j], atten_decoder[j][0]), dim=1))
            atten_decoder[j][2] = (atten_decoder[j][1]) * g_decoder[j][-1]
        feat.append([atten_encoder[-1][-1], atten_decoder[-1][-1]])
    return feat


# --- Helpers.

def random_features(tasks, seed, batch=2, height=32, width=64):
    """{task: (encoder [batch,512,height/32,width/32], decoder [batch,64,height,width])} of fixed random values."""
    generator = torch.Generator().manual_seed(seed)
    return {task: (torch.randn(batch, 512, height // 32, width // 32, generator=generator),
                   torch.randn(batch, 64, height, width, generator=generator)) for task in tasks}


def rescaled_by_pixel(features, seed):
    """`features` with each pixel's vector scaled by 10 ** u, u uniform in [-4, 0]: squared norms down to
    the normalisation's epsilon (1e-6), so that the loss depends on it."""
    generator = torch.Generator().manual_seed(seed)
    return {task: tuple(level * 10 ** (-4 * torch.rand(level.shape[0], 1, *level.shape[2:], generator=generator))
                        for level in levels) for task, levels in features.items()}


def adaptors_and_originals(tasks, seed):
    """(TaskAdaptors(tasks), [the original's transformer() per task]), each built from the same seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adaptors = TaskAdaptors(tasks)
        torch.manual_seed(seed)
        transformers = {i: transformer() for i in range(len(tasks))}
    return adaptors, transformers


# --- Tests.

@pytest.mark.parametrize("tasks", [TWO_TASKS, THREE_TASKS])
def test_adaptors_are_the_originals(tasks):
    adaptors, transformers = adaptors_and_originals(tasks, seed=0)
    params = []
    for i in range(len(tasks)):
        params += transformers[i].parameters()
    ours = list(adaptors.parameters())
    assert [tuple(parameter.shape) for parameter in ours] == [(512, 512, 1, 1), (64, 64, 1, 1)] * len(tasks)
    assert [parameter.shape for parameter in ours] == [parameter.shape for parameter in params]
    assert sum(parameter.numel() for parameter in ours) == sum(parameter.numel() for parameter in params)
    assert sum(parameter.numel() for parameter in ours) == 266_240 * len(tasks)
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(ours, params, strict=True))  # default init
    assert all(conv.bias is None for levels in adaptors.adaptors.values() for conv in levels)
    features = random_features(tasks, seed=1)
    for i, task in enumerate(tasks):
        for mine, theirs in zip(adaptors(task, features[task]), transformers[i](features[task]), strict=True):
            assert torch.equal(mine, theirs)


@pytest.mark.parametrize("tasks,lambda_", [(TWO_TASKS, [1, 1]), (THREE_TASKS, [1, 1, 2])])
def test_loss_equals_the_originals(tasks, lambda_):
    adaptors, transformers = adaptors_and_originals(tasks, seed=2)
    student = rescaled_by_pixel(random_features(tasks, seed=3), seed=4)
    teacher = rescaled_by_pixel(random_features(tasks, seed=5), seed=6)
    assert original_task_weights(tasks) == dict(zip(tasks, lambda_))
    terms = distillation_loss(student, teacher, adaptors, original_task_weights(tasks))
    with torch.no_grad():
        expected, expected_per_task = original_dist_loss([student[task] for task in tasks],
                                                         [teacher[task] for task in tasks], transformers, lambda_)
    assert isinstance(terms, DistillationTerms) and terms.total.shape == ()
    assert expected > 1  # unrelated unit vectors: about 2 per level
    torch.testing.assert_close(terms.total.detach(), expected, rtol=0, atol=1e-6)
    for task, task_expected in zip(tasks, expected_per_task, strict=True):
        torch.testing.assert_close(terms.per_task[task].detach(), task_expected, rtol=0, atol=1e-6)


def test_loss_is_zero_only_when_the_adapted_student_equals_the_teacher_after_normalisation():
    adaptors = TaskAdaptors(TWO_TASKS)
    student = random_features(TWO_TASKS, seed=5)
    weights = original_task_weights(TWO_TASKS)
    with torch.no_grad():
        adapted = {task: adaptors(task, student[task]) for task in TWO_TASKS}
    assert distillation_loss(student, adapted, adaptors, weights).total.item() == 0
    scaled = {task: tuple(3 * level for level in levels) for task, levels in adapted.items()}
    assert distillation_loss(student, scaled, adaptors, weights).total.item() < 1e-6
    perturbed = dict(adapted, depth=(adapted["depth"][0], adapted["depth"][1].flip(dims=(-1,))))
    terms = distillation_loss(student, perturbed, adaptors, weights)
    assert terms.per_task["segmentation"].item() == 0 and terms.per_task["depth"].item() > 0.1
    assert terms.total.item() > 0.1


def test_gradients_reach_the_student_features_and_adaptors_not_the_teachers():
    adaptors = TaskAdaptors(TWO_TASKS)
    student = {task: tuple(level.requires_grad_() for level in levels)
               for task, levels in random_features(TWO_TASKS, seed=6).items()}
    teacher = {task: tuple(level.requires_grad_() for level in levels)
               for task, levels in random_features(TWO_TASKS, seed=7).items()}
    distillation_loss(student, teacher, adaptors, original_task_weights(TWO_TASKS)).total.backward()
    assert all(level.grad is not None and level.grad.abs().sum() > 0 for levels in student.values() for level in levels)
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in adaptors.parameters())
    assert all(level.grad is None for levels in teacher.values() for level in levels)


def test_networks_student_gets_gradients_teachers_none_and_keep_their_mode():
    with torch.random.fork_rng():
        torch.manual_seed(8)
        student = MTAN(7, TWO_TASKS).train()
        teachers = {task: MTAN(7, (task,)).train() for task in TWO_TASKS}
        adaptors = TaskAdaptors(TWO_TASKS)
    image = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(9))
    _, features = student.forward_with_features(image)
    targets = teacher_features(teachers, image)
    assert all(not level.requires_grad for levels in targets.values() for level in levels)
    assert all(teacher.training for teacher in teachers.values())
    terms = distillation_loss(features, targets, adaptors, original_task_weights(TWO_TASKS))
    assert terms.total.item() > 0
    terms.total.backward()
    assert student.encoder_first_convs[0][0].weight.grad.abs().sum() > 0
    assert all(student.encoder_attention[branch][0][0].weight.grad.abs().sum() > 0 for branch in range(2))
    assert all(parameter.grad is not None for parameter in adaptors.parameters())
    assert all(parameter.grad is None for teacher in teachers.values() for parameter in teacher.parameters())


@pytest.mark.parametrize("tasks,num_classes", [(TWO_TASKS, 7), (THREE_TASKS, 13), (("depth",), 7)])
def test_features_are_the_originals_feat_at_32x64(tasks, num_classes):
    with torch.device("meta"):
        if len(tasks) == 1:
            original = OriginalSingleTaskSegNet(num_classes, KD4MTL_TASK_NAMES[tasks[0]])
        else:
            original = OriginalSegNetMTAN(num_classes, len(tasks))
    original = randomise_(original, seed=10)
    model = mtan_with_weights_of(original, num_classes, tasks)
    image = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        feat = original_feat(original, image, len(tasks))
        outputs, features = model.forward_with_features(image)
        plain_outputs = model(image)
    assert tuple(features) == tasks
    for task, (encoder, decoder) in zip(tasks, feat, strict=True):
        assert features[task][0].shape == (2, 512, 1, 2) and features[task][1].shape == (2, 64, 32, 64)
        assert encoder.std() > 0.01 and decoder.std() > 0.01
        torch.testing.assert_close(features[task][0], encoder)
        torch.testing.assert_close(features[task][1], decoder)
    for task in tasks:
        assert torch.equal(getattr(outputs, task), getattr(plain_outputs, task))


def test_forward_with_features_rejects_sizes_not_multiple_of_32():
    with torch.device("meta"):
        model = MTAN(7, TWO_TASKS)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(1, 3, 48, 64\)"):
        model.forward_with_features(torch.empty(1, 3, 48, 64, device="meta"))


def test_mismatched_tasks_are_a_clear_error():
    adaptors = TaskAdaptors(TWO_TASKS)
    features = random_features(TWO_TASKS, seed=12)
    with pytest.raises(ValueError, match=r"^teacher_features: expected the tasks \('segmentation', 'depth'\)"):
        distillation_loss(features, random_features(THREE_TASKS, seed=13), adaptors, original_task_weights(TWO_TASKS))


def test_adaptor_optimizer_is_the_originals():
    adaptors, transformers = adaptors_and_originals(THREE_TASKS, seed=14)
    params = []
    for i in range(3):
        params += transformers[i].parameters()
    ours, theirs = adaptor_optimizer(adaptors), optim.Adam(params, lr=1e-1, weight_decay=5e-4)
    assert isinstance(ours, optim.Adam) and len(ours.param_groups) == 1
    assert ours.param_groups[0]["params"] == list(adaptors.parameters())
    assert ours.param_groups[0]["lr"] == 0.1 and ours.param_groups[0]["weight_decay"] == 5e-4
    assert ({key: value for key, value in ours.param_groups[0].items() if key != "params"}
            == {key: value for key, value in theirs.param_groups[0].items() if key != "params"})
