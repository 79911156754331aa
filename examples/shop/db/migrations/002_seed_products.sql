-- Seed data; ON CONFLICT makes a second run a no-op.
INSERT INTO products (sku, name, price_cents, stock) VALUES
  ('MUG-001', 'Mayfly Coffee Mug',      1200, 40),
  ('TEE-002', 'Ephemeral T-Shirt',      2500, 25),
  ('STK-003', 'Sticker Pack',            500, 200),
  ('CAP-004', 'Preview Cap',            1800, 15),
  ('NTB-005', 'Throwaway Notebook',      900, 60)
ON CONFLICT (sku) DO NOTHING;
