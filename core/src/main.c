/* Placeholder entry while the core is assembled; replaced by the real CLI. */
#include <stdio.h>
int main(void)
{
    puts("gatestream " GS_VERSION);
    return 0;
}
