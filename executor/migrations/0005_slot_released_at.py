"""When each slot's last lease ended, for the warm pool's refill rule (executor/pool.py, tend).
A nullable column: servers still on the old code keep working while replicas start."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("executor", "0004_slots_per_host")]

    operations = [
        migrations.AddField(model_name="executionslot", name="released_at",
                            field=models.DateTimeField(blank=True, null=True)),
    ]
