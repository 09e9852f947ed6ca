"""A technique's role: how its cases come about, and what follows from it (whether they have a
model of their own, a recipe table, the profile section that configures them). Everything
that depends on a role asks it here, never compares its name."""
from __future__ import annotations

import enum


class Role(enum.Enum):
    TRAINED = "trained"  # trained from its recipe in [techniques.NAME] (maybe from an upstream model)
    COMPRESSION = "compression"  # [compression.NAME]: compresses (and retrains) each of [compression] bases
    DEPLOYMENT = "deployment"  # [deployment.NAME]: measures each of [deployment] bases; nothing trained or cached
    MEASUREMENT = "measurement"  # [techniques.NAME] recipe, measured in this run; nothing cached, no accuracy

    def __str__(self) -> str:
        return self.value

    @property
    def has_model(self) -> bool:
        """Its cases train or compress a model of their own, built once and cached."""
        return self in (Role.TRAINED, Role.COMPRESSION)

    @property
    def has_recipe(self) -> bool:
        """It trains from a recipe table of its own, [techniques.NAME]."""
        return self in (Role.TRAINED, Role.MEASUREMENT)

    @property
    def applies_to_bases(self) -> bool:
        """It is applied to the models of a table's ``bases`` ([compression] or [deployment])."""
        return self in (Role.COMPRESSION, Role.DEPLOYMENT)

    @property
    def section(self) -> str:
        """The profile table that configures it."""
        return self.value if self.applies_to_bases else "techniques"

    @property
    def retrains(self) -> bool:
        """Its table takes retraining keys (a compression retrains what it compressed)."""
        return self is Role.COMPRESSION

    @property
    def measures_its_own(self) -> bool:
        """It measures a model it makes in its own run (nothing cached)."""
        return self is Role.MEASUREMENT

    @property
    def measures_a_base(self) -> bool:
        """It measures a base's model and trains nothing."""
        return self is Role.DEPLOYMENT
