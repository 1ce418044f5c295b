/** Every scenario of the lab, one file each. Adding one: write its file, list it here. */
import type { Scenario } from '../types.ts';
import { clientSideScanning } from './client-side-scanning.ts';
import { endToEnd } from './end-to-end.ts';
import { forgedEscrow } from './forged-escrow.ts';
import { insiderTap } from './insider-tap.ts';
import { exportGrade } from './export-grade.ts';
import { interceptBreached } from './intercept-breached.ts';
import { keyStolen } from './key-stolen.ts';
import { metadataOnly } from './metadata-only.ts';
import { preEncryption } from './pre-encryption.ts';
import { sealedSender } from './sealed-sender.ts';
import { serverHeldKeys } from './server-held-keys.ts';
import { sharedAppKey } from './shared-app-key.ts';
import { swappedEscrowKey } from './swapped-escrow-key.ts';
import { tapOn } from './tap-on.ts';

export const SCENARIOS: readonly Scenario[] = [
  endToEnd,
  tapOn,
  keyStolen,
  metadataOnly,
  sealedSender,
  sharedAppKey,
  serverHeldKeys,
  interceptBreached,
  forgedEscrow,
  preEncryption,
  swappedEscrowKey,
  insiderTap,
  exportGrade,
  clientSideScanning,
];
