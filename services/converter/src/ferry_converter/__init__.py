"""Pure conversion of ModelBooster/ModelServing into their desired children."""
