"""Knowledge distillation in `bertcli finetune` (`distill.*` keys): the soft losses (`losses`), the teacher's
checks and its outputs kept per training row (`teacher`), the layer losses with the teacher beside the student
(`intermediate`), and a student cut from a checkpoint's layers (`layers`). The task families take part through
`TaskFamily.teacher_rows` and `TaskFamily.soft_loss`."""
