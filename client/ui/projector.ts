import './no-eval.ts';
