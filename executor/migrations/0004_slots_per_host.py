"""Slots belong to a server (several servers share one PostgreSQL): the slot and waiter tables
are made anew. Their rows are leases, at most a few minutes old, remade on first use; a server
still running the old code while this runs loses nothing but its current leases' bookkeeping."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("executor", "0003_warm_owner_deadline")]

    operations = [
        migrations.DeleteModel(name="ExecutionSlot"),
        migrations.DeleteModel(name="SlotWaiter"),
        migrations.CreateModel(
            name="ExecutionSlot",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("host", models.CharField(db_index=True, default="", max_length=64)),
                ("number", models.PositiveIntegerField()),
                ("holder", models.CharField(blank=True, default="", max_length=64)),
                ("leased_at", models.DateTimeField(blank=True, null=True)),
                ("leased_until", models.DateTimeField(blank=True, null=True)),
                ("seen_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["host", "number"],
                "constraints": [models.UniqueConstraint(fields=("host", "number"), name="one_row_per_slot_of_a_host")],
            },
        ),
        migrations.CreateModel(
            name="SlotWaiter",
            fields=[
                ("token", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("host", models.CharField(db_index=True, default="", max_length=64)),
                ("waiting_until", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
