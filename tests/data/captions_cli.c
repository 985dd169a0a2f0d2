/* `qsens captions` as a stand-alone program, so its tests do not depend on
 * the rest of the application: captions_cli ARGS == qsens ARGS. */
int qs_cmd_captions(int argc, char **argv);

int main(int argc, char **argv) { return qs_cmd_captions(argc - 1, argv + 1); }
