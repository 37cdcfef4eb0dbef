//! perfvisor's own GDT and TSS (the bootloader's tables live in memory we do
//! not own). The TSS gives the double-fault, NMI and machine-check handlers
//! a known-good stack through the IST (SDM vol. 3A §7.14.5).

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (1-based in the IDT, 0-based here) for #DF, NMI and #MC.
pub const CRITICAL_IST_INDEX: u16 = 0;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(align(16))]
#[expect(dead_code, reason = "only the stack's address is used")]
struct Stack([u8; IST_STACK_SIZE]);

static mut CRITICAL_STACK: Stack = Stack([0; IST_STACK_SIZE]);

pub struct Selectors {
    pub code: SegmentSelector,
    pub data: SegmentSelector,
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// Loads the GDT and TSS and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        let stack_start = VirtAddr::from_ptr(&raw const CRITICAL_STACK);
        tss.interrupt_stack_table[CRITICAL_IST_INDEX as usize] = stack_start + IST_STACK_SIZE as u64;
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which
    // lives in a `static` and so stays valid for the kernel's lifetime.
    unsafe {
        CS::set_reg(selectors.code);
        SS::set_reg(selectors.data);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}

/// The selectors of the loaded GDT (the VMCS host-state area needs them).
pub fn selectors() -> &'static Selectors {
    &GDT.get().expect("gdt::init not called").1
}

/// The TSS's linear address (host TR base).
pub fn tss_base() -> u64 {
    TSS.get().expect("gdt::init not called") as *const TaskStateSegment as u64
}
